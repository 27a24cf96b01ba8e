"""An external PostgreSQL from nothing to serving (docs/deployment.md): `vetify db provision`
as its superuser, or its SQL run by a managed service's administrator, then `vetify migrate`
with the URLs it printed, a log-in as the service's role, and a backup by the backup role
(ADR 0015). The test PostgreSQL plays the external one, with a database and roles of each
test's own."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app import cli
from app.auth.models import Role
from app.db.embedded import bin_dir
from app.db.migrate import head_revisions, plain_url
from app.db.provision import Provisioning, Roles, provision, provision_sync, scram_verifier
from fixtures.factories import DEFAULT_PASSWORD
from tests.harness.api import SIGNUP_PASSWORD, login, signup, signup_body
from tests.harness.databases import Database, schema_heads
from tests.harness.live import run_vetify
from tests.harness.plugin import asgi_client
from tests.harness.services import PostgresServer


@dataclass(frozen=True)
class Names:
    """A database and roles of one test's own, on the shared test server."""

    database: str
    owner: str
    app: str
    backup: str

    def roles(self) -> Roles:
        return Roles(self.owner, self.app, self.backup)

    def options(self) -> tuple[str, ...]:
        return (
            "--database",
            self.database,
            "--owner-role",
            self.owner,
            "--app-role",
            self.app,
            "--backup-role",
            self.backup,
        )


@pytest.fixture
async def names(postgres_server: PostgresServer) -> AsyncIterator[Names]:
    tag = uuid.uuid4().hex[:10]
    made = Names(f"prov_{tag}", f"prov_owner_{tag}", f"prov_app_{tag}", f"prov_backup_{tag}")
    yield made
    admin = await asyncpg.connect(plain_url(postgres_server.url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
        for role in (made.owner, made.app, made.backup):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()


def _printed_urls(output: str) -> dict[str, str]:
    """``VETIFY_DATABASE_URL`` and ``VETIFY_DATABASE_OWNER_URL`` as printed, and the backup
    role's URL (``backup``)."""
    urls = dict(re.findall(r"^(VETIFY_DATABASE(?:_OWNER)?_URL)=(\S+)$", output, re.MULTILINE))
    urls["backup"] = re.findall(r"^# backup role \(pg_dump\): (\S+)$", output, re.MULTILINE)[0]
    return urls


async def _roles(server: PostgresServer, names: Names) -> dict[str, tuple[bool, ...]]:
    """Each role's (superuser, bypassrls, createrole, createdb, login, reads all data,
    replication)."""
    admin = await asyncpg.connect(plain_url(server.url()))
    try:
        rows = await admin.fetch(
            "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolcanlogin,"
            " pg_has_role(rolname, 'pg_read_all_data', 'USAGE'), rolreplication"
            " FROM pg_roles WHERE rolname = ANY($1::text[])",
            [names.owner, names.app, names.backup],
        )
        owner = await admin.fetchval(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", names.database
        )
    finally:
        await admin.close()
    assert owner == names.owner
    return {row[0]: tuple(row[1:]) for row in rows}


def _promised(names: Names, *, by_superuser: bool = True) -> dict[str, tuple[bool, ...]]:
    """Neither owner nor service role is superuser, BYPASSRLS, CREATEROLE or CREATEDB, nor
    reads beyond its grants, nor replicates; the backup role bypasses row-level security and
    reads all, and takes base backups where a superuser provisioned it."""
    plain = (False, False, False, False, True, False, False)
    return {
        names.owner: plain,
        names.app: plain,
        names.backup: (False, True, False, False, True, True, by_superuser),
    }


def _psql(url: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the bundled psql, fixed arguments
        [str(bin_dir() / "psql"), "--no-psqlrc", "--dbname", plain_url(url)],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _dumped(url: str) -> str:
    """pg_dump of the database at ``url``, as its role: the SQL text a backup holds."""
    dumped = subprocess.run(  # noqa: S603 - the bundled pg_dump, fixed arguments
        [str(bin_dir() / "pg_dump"), "--dbname", plain_url(url)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dumped.returncode == 0, dumped.stderr
    return dumped.stdout


def _dump(url: str) -> dict[str, int]:
    """pg_dump of the database at ``url``, as its role: rows per table."""
    rows: dict[str, int] = {}
    table = None
    for line in _dumped(url).splitlines():
        if table is None:
            copy = re.match(r"COPY public\.(\w+) ", line)
            if copy:
                table = copy.group(1)
                rows[table] = 0
        elif line == "\\.":
            table = None
        else:
            rows[table] += 1
    return rows


async def _stored(superuser_url: str) -> dict[str, int]:
    """Rows per table in the public schema, as the superuser sees them."""
    connection = await asyncpg.connect(plain_url(superuser_url))
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        return {
            table: await connection.fetchval(f'SELECT count(*) FROM public."{table}"')
            for (table,) in tables
        }
    finally:
        await connection.close()


async def _assert_backup_has_every_row(backup_url: str, superuser_url: str) -> None:
    stored = await _stored(superuser_url)
    assert stored["memberships"] >= 2, "two clinics' rows, or the dump proves little"
    assert await asyncio.to_thread(_dump, backup_url) == stored


async def _two_clinics_signed_up_and_logged_in(app: FastAPI) -> None:
    async with asgi_client(app) as client:
        for _ in range(2):
            body = signup_body()
            assert (await signup(client, body)).status_code == 201
            assert (await login(client, body["email"], SIGNUP_PASSWORD)).status_code == 200


async def test_the_backup_role_dumps_every_tenant_row_and_writes_none(database, world) -> None:
    """Issue 16, defect 9: the owner's pg_dump fails on forced row-level security, and with
    --enable-row-security it dumps no tenant rows. The backup role reads them all."""
    await world.clinic()
    await world.clinic()
    await _assert_backup_has_every_row(database.backup_url, database.superuser_url)

    connection = await asyncpg.connect(plain_url(database.backup_url))
    try:
        await connection.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        for statement in (
            "DELETE FROM memberships",
            "UPDATE users SET email = 'x@example.com'",
            "CREATE TABLE public.planted (id int)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
    finally:
        await connection.close()


async def test_provision_twice_then_migrate_log_in_and_back_up(
    postgres_server: PostgresServer,
    names: Names,
    tmp_path,
    configured_app: Callable[..., AbstractAsyncContextManager[FastAPI]],
) -> None:
    provision = ("db", "provision", "--admin-url", postgres_server.url(), *names.options())
    first = await asyncio.to_thread(run_vetify, *provision)
    again = await asyncio.to_thread(run_vetify, *provision)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr

    urls = _printed_urls(first.stdout)
    assert all(make_url(url).password for url in urls.values())
    # The second run changed nothing: the roles keep the passwords the first one printed.
    assert not any(make_url(url).password for url in _printed_urls(again.stdout).values())
    assert await _roles(postgres_server, names) == _promised(names)

    migrated = await asyncio.to_thread(
        run_vetify,
        "migrate",
        VETIFY_DATABASE_URL=urls["VETIFY_DATABASE_URL"],
        VETIFY_DATABASE_OWNER_URL=urls["VETIFY_DATABASE_OWNER_URL"],
        VETIFY_DATA_DIR=str(tmp_path / "state"),
    )
    assert migrated.returncode == 0, migrated.stderr
    provisioned = Database(names.database, postgres_server)
    assert await schema_heads(provisioned) == head_revisions()

    async with configured_app(
        database_url=urls["VETIFY_DATABASE_URL"],
        database_owner_url=urls["VETIFY_DATABASE_OWNER_URL"],
    ) as app:
        await _two_clinics_signed_up_and_logged_in(app)
    await _assert_backup_has_every_row(urls["backup"], provisioned.superuser_url)


async def test_the_printed_sql_provisions_as_a_managed_service_administrator(
    postgres_server: PostgresServer, names: Names, tmp_path
) -> None:
    """RDS, Cloud SQL and Azure give no superuser, but an administrator that may create roles
    and databases; since PostgreSQL 16 it hands on only what it holds (BYPASSRLS, and
    pg_read_all_data with ADMIN OPTION), as the providers' administrators do."""
    administrator = f"admin_{uuid.uuid4().hex[:10]}"
    superuser = await asyncpg.connect(plain_url(postgres_server.url()))
    try:
        await superuser.execute(
            f'CREATE ROLE "{administrator}" LOGIN CREATEROLE CREATEDB BYPASSRLS'
            f" PASSWORD '{postgres_server.role_password}'"
        )
        await superuser.execute(f'GRANT pg_read_all_data TO "{administrator}" WITH ADMIN OPTION')
        # It connects to nothing: the administrator's URL says where the printed URLs point.
        admin_url = postgres_server.url(administrator)
        script = await asyncio.to_thread(
            run_vetify, "db", "provision", "--sql", "--admin-url", admin_url, *names.options()
        )
        assert script.returncode == 0, script.stderr
        for _ in range(2):  # a second run changes nothing
            ran = await asyncio.to_thread(_psql, admin_url, script.stdout)
            assert ran.returncode == 0, ran.stderr
            assert "ERROR" not in ran.stderr, ran.stderr
        assert await _roles(postgres_server, names) == _promised(names, by_superuser=False)
        urls = _printed_urls(script.stderr)
        migrated = await asyncio.to_thread(
            run_vetify,
            "migrate",
            VETIFY_DATABASE_URL=urls["VETIFY_DATABASE_URL"],
            VETIFY_DATABASE_OWNER_URL=urls["VETIFY_DATABASE_OWNER_URL"],
            VETIFY_DATA_DIR=str(tmp_path / "state"),
        )
        assert migrated.returncode == 0, migrated.stderr
        assert await schema_heads(Database(names.database, postgres_server)) == head_revisions()
    finally:
        # What it made first (the administrator granted their memberships), then itself.
        await superuser.execute(f'DROP DATABASE IF EXISTS "{names.database}" WITH (FORCE)')
        for role in (names.owner, names.app, names.backup, administrator):
            await superuser.execute(f'DROP ROLE IF EXISTS "{role}"')
        await superuser.close()


async def _database_of(server: PostgresServer, names: Names) -> tuple[str, bool]:
    """Who owns the database's public schema, and whether btree_gist is there."""
    connection = await asyncpg.connect(plain_url(server.url(database=names.database)))
    try:
        owner = await connection.fetchval(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
        )
        gist = await connection.fetchval(
            "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'btree_gist')"
        )
    finally:
        await connection.close()
    return owner, gist


async def test_provisioning_makes_each_role_once_with_its_password_sent_as_a_verifier(
    postgres_server: PostgresServer, names: Names
) -> None:
    """In process, what `vetify db provision` runs: the roles it made are those it reports
    (and prints passwords for); a second run makes none and changes no password."""
    password = secrets.token_urlsafe(24)
    plan = Provisioning(names.database, names.roles(), {names.app: password})

    assert await provision(postgres_server.url(), plan) == {names.owner, names.app, names.backup}
    # As `vetify db provision` and the test servers' template call it, from synchronous code.
    assert await asyncio.to_thread(provision_sync, postgres_server.url(), plan) == set()

    assert await _roles(postgres_server, names) == _promised(names)
    assert await _database_of(postgres_server, names) == (names.owner, True)
    superuser = await asyncpg.connect(plain_url(postgres_server.url()))
    try:
        stored = dict(
            await superuser.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
                [names.owner, names.app],
            )
        )
    finally:
        await superuser.close()
    assert stored[names.owner] is None  # given no password: it logs in by the server's rules
    salt = base64.b64decode(stored[names.app].split(":")[1].split("$")[0])
    assert scram_verifier(password, salt) == stored[names.app]


async def test_the_provisioning_script_stops_at_its_first_error_and_runs_twice(
    postgres_server: PostgresServer, names: Names
) -> None:
    """The psql script a DBA runs: run by a role that may not make roles it stops at the
    first statement, saying so in psql's exit status, rather than carrying on with the rest;
    run by one that may, it provisions, and a second run changes nothing."""
    script = Provisioning(names.database, names.roles()).script()
    powerless = f"powerless_{uuid.uuid4().hex[:10]}"
    superuser = await asyncpg.connect(plain_url(postgres_server.url()))
    try:
        await superuser.execute(
            f"CREATE ROLE \"{powerless}\" LOGIN PASSWORD '{postgres_server.role_password}'"
        )
        refused = await asyncio.to_thread(_psql, postgres_server.url(powerless), script)
    finally:
        await superuser.execute(f'DROP ROLE IF EXISTS "{powerless}"')
        await superuser.close()
    assert refused.returncode == 3, refused.stderr  # psql's "a script error" with ON_ERROR_STOP
    assert refused.stderr.count("ERROR:") == 1, refused.stderr

    for _ in range(2):
        ran = await asyncio.to_thread(_psql, postgres_server.url(), script)
        assert ran.returncode == 0, ran.stderr
        assert "ERROR" not in ran.stderr, ran.stderr
    assert await _roles(postgres_server, names) == _promised(names)
    assert await _database_of(postgres_server, names) == (names.owner, True)


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ((), "give --admin-url"),
        (("--admin-url", "postgresql://postgres@127.0.0.1:1/postgres"), "127.0.0.1"),
    ],
)
def test_provision_says_in_one_line_why_it_cannot(arguments, why) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(["db", "provision", *arguments])
    message = str(refused.value)
    assert message.startswith("vetify db provision: ")
    assert why in message
    assert "\n" not in message


def test_provision_refuses_a_name_it_would_have_to_quote(capsys) -> None:
    with pytest.raises(SystemExit) as refused:
        cli.main(["db", "provision", "--sql", "--app-role", 'app"; DROP ROLE postgres; --'])
    assert refused.value.code == 2
    assert "--app-role: not a plain identifier" in capsys.readouterr().err


async def test_a_password_is_sent_as_the_verifier_postgresql_would_make(
    postgres_server: PostgresServer,
) -> None:
    """What provisioning sends instead of the password is what PostgreSQL itself stores."""
    role, password = f"scram_{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(24)
    superuser = await asyncpg.connect(plain_url(postgres_server.url()))
    try:
        # pragma: allowlist nextline secret - a setting's value (how passwords are stored)
        await superuser.execute("SET password_encryption = 'scram-sha-256'")
        await superuser.execute(f"CREATE ROLE \"{role}\" PASSWORD '{password}'")
        stored = await superuser.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )
    finally:
        await superuser.execute(f'DROP ROLE IF EXISTS "{role}"')
        await superuser.close()
    salt = base64.b64decode(stored.split(":")[1].split("$")[0])
    assert scram_verifier(password, salt) == stored
    # Made without a salt given: a fresh one each time, as long as PostgreSQL's own.
    made = scram_verifier(password)
    assert made != scram_verifier(password)
    assert len(base64.b64decode(made.split(":")[1].split("$")[0])) == len(salt)


async def test_a_backup_holds_no_secret_in_the_clear(database, world, client) -> None:
    """What a dump (a backup, a replica, a stolen disk) must not give away: a TOTP secret, a
    client's contact details and clinical text, pets' alerts included (sealed, ADRs 0028, 0032,
    0033 and 0038), a password
    or an API token (hashed), neither as text nor as the hex a bytea column is dumped as."""
    clinic = await world.clinic()
    tag = uuid.uuid4().hex[:12]
    contact = {
        "a client's email": f"dump.canary.{tag}@example.org",
        "a client's phone": f"+3519{uuid.uuid4().int % 10**8:08d}",
        "a client's street": f"Travessa Canario {tag}",
        "a client's address line 2": f"Porta {tag[:6]}",
        "a client's city": f"Aldeia{tag}",
        "a client's postcode": f"Z{tag[:6]}",
    }
    body = dict(
        zip(
            ("email", "phone", "address_line1", "address_line2", "city", "postcode"),
            contact.values(),
            strict=True,
        )
    )
    name = f"Named{tag}"
    created = await client.post(
        "/api/v1/customers",
        json={"first_name": name, "last_name": "Kept", **body},
        headers=clinic.owner.headers,
    )
    assert created.status_code == 201, created.text
    record = (await world.record(clinic)).id
    notes = {
        "a record's subjective note": f"Limping canary {tag} since Tuesday",
        "a record's plan": f"Recheck canary plan {tag}",
    }
    changed = await client.patch(
        f"/api/v1/medical-records/{record}",
        json=dict(zip(("subjective", "plan"), notes.values(), strict=True)),
        headers=clinic.actors[Role.vet].headers,
    )
    assert changed.status_code == 200, changed.text
    addendum = f"Addendum canary {tag}: owner called"
    added = await client.post(
        f"/api/v1/medical-records/{record}/addenda",
        json={"text": addendum},
        headers=clinic.actors[Role.vet].headers,
    )
    assert added.status_code == 201, added.text
    alert = f"Alert canary {tag}: bites when muzzled"
    pet = await client.post(
        "/api/v1/pets",
        json={
            "customer_id": created.json()["id"],
            "name": "Rex",
            "species": "dog",
            "alerts": [alert],
        },
        headers=clinic.owner.headers,
    )
    assert pet.status_code == 201, pet.text
    canaries = {
        **notes,
        "an addendum": addendum,
        "a pet's alert": alert,
        "a TOTP secret": await world.enrol_mfa(clinic.owner.user),
        "an API token": clinic.owner.token,
        "a password": DEFAULT_PASSWORD,
        **contact,
    }

    dump = (await asyncio.to_thread(_dumped, database.backup_url)).lower()

    assert str(clinic.owner.user.id) in dump  # the rows are there
    # What is not sealed is found: the search works.
    assert clinic.owner.user.email.lower() in dump
    assert name.lower() in dump  # a client's names stay in the clear (searched by any part)
    found = [
        what
        for what, value in canaries.items()
        if value.lower() in dump or value.encode().hex() in dump
    ]
    assert not found, f"in the clear in a backup: {found}"
