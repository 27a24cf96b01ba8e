"""The database and its three roles, made once by a superuser or a managed service's
administrator (ADR 0015): `vetify db provision`, the embedded database's set-up, the test
servers' template.

* the *owner* owns the database and its schema and runs migrations;
* the *service* role the API and the worker connect as owns nothing, is not a superuser and
  cannot bypass row-level security; migrations grant it what each table needs;
* the *backup* role reads every row of every clinic (``BYPASSRLS``, ``pg_read_all_data``),
  and, provisioned by a superuser, takes base backups (``REPLICATION``: `vetify backup now`)
  and writes nothing: ``pg_dump`` as the owner fails on forced row-level security.

Every statement may run again and changes nothing the second time; the same statements are
run here and printed as a psql script for a DBA (``vetify db provision --sql``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import make_url

from app.db.migrate import identifier, plain_url

SCRAM_ITERATIONS = 4096
"""PostgreSQL's own default (scram_iterations)."""

# The statements are text built from names identifier() admitted ([a-z_][a-z0-9_]*: as safe in
# quotes as unquoted) and constants: DDL takes no bound parameters (so the nosec B608 below).
_PLAIN = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
_BACKUP = "LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE"


@dataclass(frozen=True)
class Roles:
    owner: str = "vetify_owner"
    app: str = "vetify_app"
    backup: str = "vetify_backup"

    def __post_init__(self) -> None:
        for name in self.names:
            identifier(name)  # refuses anything but a plain lower-case name

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.owner, self.app, self.backup)


@dataclass(frozen=True)
class Provisioning:
    """What makes one database and its roles."""

    database: str
    roles: Roles = field(default_factory=Roles)
    passwords: Mapping[str, str] = field(default_factory=dict)
    """The password of each role created with one; sent as its SCRAM verifier only, so the
    password reaches neither the server nor its statement log."""

    def __post_init__(self) -> None:
        identifier(self.database)  # so it is as safe unquoted (psql) and in quotes

    def on_server(self) -> list[str]:
        """Connected to any database of the server: the roles."""
        owner, backup = identifier(self.roles.owner), identifier(self.roles.backup)
        return [
            self._create_role(self.roles.owner, _PLAIN),
            self._create_role(self.roles.app, _PLAIN),
            self._create_role(self.roles.backup, _BACKUP),
            f"GRANT pg_read_all_data TO {backup}",
            # Its grants only read; its sessions start read-only as well.
            f"ALTER ROLE {backup} SET default_transaction_read_only = on",
            # A superuser (a server of one's own) lets the backup role take base backups too
            # (`vetify backup now`); a managed service's provider backs its database up.
            _block(
                "IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN"  # noqa: S608  # nosec B608
                f" ALTER ROLE {backup} REPLICATION; END IF;"
            ),
            # A managed service's administrator is no superuser: it gives the owner a database
            # and a schema only as a member of the owner's role.
            _block(
                "IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN"  # noqa: S608  # nosec B608
                f" GRANT {owner} TO CURRENT_USER; END IF;"
            ),
        ]

    def create_database(self) -> str:
        return f"CREATE DATABASE {identifier(self.database)} OWNER {identifier(self.roles.owner)}"

    def in_database(self) -> list[str]:
        """Connected to the database: its schema belongs to the owner and nobody else creates
        objects in it; btree_gist (the double-booking constraint) is there before migrations."""
        return [
            f"ALTER SCHEMA public OWNER TO {identifier(self.roles.owner)}",
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "CREATE EXTENSION IF NOT EXISTS btree_gist",
        ]

    def script(self) -> str:
        """The same statements as a psql script."""
        missing = f"NOT EXISTS (SELECT FROM pg_database WHERE datname = '{self.database}')"  # nosec B608
        return "\n".join(
            [
                f"-- Vetify: the database {self.database} and its roles (vetify db provision).",
                "-- Run with psql as a superuser or the service's administrator, e.g.",
                '--   psql "postgresql://ADMIN@HOST:5432/postgres" -f provision.sql',
                "-- A second run changes nothing.",
                r"\set ON_ERROR_STOP on",
                *(f"{statement};" for statement in self.on_server()),
                f"SELECT '{self.create_database()}' WHERE {missing}\\gexec",
                f"\\connect {self.database}",
                *(f"{statement};" for statement in self.in_database()),
                "",
            ]
        )

    def _create_role(self, role: str, attributes: str) -> str:
        password = self.passwords.get(role)
        secret = f" PASSWORD '{scram_verifier(password)}'" if password else ""
        return _block(
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"  # nosec B608
            f" CREATE ROLE {identifier(role)} {attributes}{secret}; END IF;"
        )


def _block(body: str) -> str:
    return f"DO $vetify$ BEGIN {body} END $vetify$"


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores of a password for SCRAM-SHA-256 (RFC 5802 and 7677), as psql's
    \\password sends it. ASCII passwords only (PostgreSQL normalises others with SASLprep)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    encoded = [base64.b64encode(part).decode() for part in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{encoded[0]}${encoded[1]}:{encoded[2]}"


async def provision(admin_url: str, plan: Provisioning) -> set[str]:
    """Run ``plan`` as the role of ``admin_url``; the roles it created (others keep their
    passwords)."""
    connection = await asyncpg.connect(plain_url(admin_url))
    try:
        found = await connection.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", plan.roles.names
        )
        for statement in plan.on_server():
            await connection.execute(statement)
        if not await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", plan.database
        ):
            await connection.execute(plan.create_database())
    finally:
        await connection.close()
    connection = await asyncpg.connect(plain_url(make_url(admin_url).set(database=plan.database)))
    try:
        for statement in plan.in_database():
            await connection.execute(statement)
    finally:
        await connection.close()
    return set(plan.roles.names) - {row[0] for row in found}


def provision_sync(admin_url: str, plan: Provisioning) -> set[str]:
    return asyncio.run(provision(admin_url, plan))
