"""Field-level encryption's keys against the real database (ADR 0028): a scope's first data key
made once however many ask at once, values bound to their scope, field and row, the key-
encryption key rotated without touching a sealed value (to a new local key, and to KMS on
moto's server), `vetify keys rotate-kek`, and migration 0012 sealing the TOTP secrets stored
before it and opening them again on the way down."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import cli
from app.db import migrate
from app.keys import service as keys
from app.kit.sealing import AwsKms, Keyring, Unreadable
from tests.harness.databases import APP_ROLE

FIELD = "customers.phone"


def keyring(*names: str) -> Keyring:
    """A keyring of fresh keys, each named and remembered by name for the test."""
    return Keyring.of({name: _KEYS.setdefault(name, os.urandom(32)) for name in names})


_KEYS: dict[str, bytes] = {}


def written(ring: Keyring) -> str:
    """``ring`` as VETIFY_ENCRYPTION_KEYS is written."""
    return ",".join(f"{name}:{base64.b64encode(key).decode()}" for name, key in ring.keys.items())


@pytest.fixture(autouse=True)
def configured(settings) -> Iterator[None]:
    """Each test configures its own keys; the settings' are put back after it."""
    _KEYS.clear()
    yield
    keys.configure(keys.wrapper_from(settings))


@pytest.fixture
def sessions(app_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(app_engine, expire_on_commit=False)


async def sealed_in(sessions, scope: str, row_id: uuid.UUID, plaintext: str) -> bytes:
    async with sessions() as session, session.begin():
        return await keys.seal(session, scope, FIELD, row_id, plaintext)


async def opened(sessions, scope: str, row_id: uuid.UUID, sealed: bytes) -> str:
    async with sessions() as session, session.begin():
        return await keys.unseal(session, scope, FIELD, row_id, sealed)


async def stored_keys(engine: AsyncEngine) -> list[tuple[str, int, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT scope, version, kek_id FROM data_keys ORDER BY scope, version")
        )
        return list(rows)  # Row is a tuple


async def test_a_value_opens_only_where_it_was_sealed(sessions) -> None:
    keys.configure(keyring("a"))
    clinic, other, row = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4()
    sealed = await sealed_in(sessions, clinic, row, "+351 912 345 678")
    assert b"912" not in sealed
    assert await opened(sessions, clinic, row, sealed) == "+351 912 345 678"
    for scope, row_id in ((other, row), (clinic, uuid.uuid4())):
        with pytest.raises(Unreadable):
            await opened(sessions, scope, row_id, sealed)
    async with sessions() as session, session.begin():
        with pytest.raises(Unreadable):
            await keys.unseal(session, clinic, "customers.email", row, sealed)
    # The same plaintext twice: two different values (a fresh nonce each).
    assert await sealed_in(sessions, clinic, row, "+351 912 345 678") != sealed


async def test_a_scopes_first_key_is_made_once_when_many_ask_at_once(
    sessions, superuser_engine
) -> None:
    keys.configure(keyring("a"))
    scope = str(uuid.uuid4())
    rows = [uuid.uuid4() for _ in range(8)]

    async def one_process(row: uuid.UUID) -> bytes:
        keys.configure(keyring("a"))  # a process of its own: nothing cached
        return await sealed_in(sessions, scope, row, f"secret of {row}")

    sealed = await asyncio.gather(*(one_process(row) for row in rows))
    assert [s for s in await stored_keys(superuser_engine) if s[0] == scope] == [
        (scope, 1, "local:a")
    ]
    keys.configure(keyring("a"))
    assert [await opened(sessions, scope, row, s) for row, s in zip(rows, sealed, strict=True)] == [
        f"secret of {row}" for row in rows
    ]


async def test_a_key_made_in_a_rolled_back_transaction_is_still_the_scopes(sessions) -> None:
    """The first key is committed on its own: a value sealed after a rollback opens."""
    keys.configure(keyring("a"))
    scope, row = str(uuid.uuid4()), uuid.uuid4()
    async with sessions() as session:
        await keys.seal(session, scope, FIELD, row, "lost with its transaction")
        await session.rollback()
    sealed = await sealed_in(sessions, scope, row, "kept")
    keys.configure(keyring("a"))  # another process, reading the key from the table
    assert await opened(sessions, scope, row, sealed) == "kept"


async def test_a_scope_whose_keys_are_deleted_has_its_values_shredded(
    sessions, superuser_engine
) -> None:
    keys.configure(keyring("a"))
    shredded, kept, row = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4()
    gone = await sealed_in(sessions, shredded, row, "erased client")
    still = await sealed_in(sessions, kept, row, "another clinic's")
    async with superuser_engine.begin() as connection:
        await connection.execute(text("DELETE FROM data_keys WHERE scope = :s"), {"s": shredded})
    keys.configure(keyring("a"))  # a process that has not kept the key in memory
    with pytest.raises(Unreadable, match="no data key 1 for this scope"):
        await opened(sessions, shredded, row, gone)
    assert await opened(sessions, kept, row, still) == "another clinic's"


class Counted:
    """A keyring that counts what it unwraps."""

    def __init__(self, ring: Keyring) -> None:
        self.ring, self.unwrapped = ring, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.ring, name)

    def unwrap(self, *args: object) -> bytes:
        self.unwrapped += 1
        return self.ring.unwrap(*args)


async def test_a_process_forgets_a_deleted_key_it_had_opened_within_its_bound(
    sessions, superuser_engine, monkeypatch
) -> None:
    """Shredding reaches the processes' memory too: a key deleted is still used for at most
    OPENED_FOR_SECONDS, then refused. A key still stored is looked for, not unwrapped again."""
    ring = Counted(keyring("a"))
    keys.configure(ring)
    shredded, kept, row = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4()
    gone = await sealed_in(sessions, shredded, row, "erased client")
    still = await sealed_in(sessions, kept, row, "another clinic's")
    async with superuser_engine.begin() as connection:
        await connection.execute(text("DELETE FROM data_keys WHERE scope = :s"), {"s": shredded})
    assert await opened(sessions, shredded, row, gone) == "erased client"  # within the bound
    unwrapped = ring.unwrapped

    monkeypatch.setattr(keys, "OPENED_FOR_SECONDS", 0.0)  # the bound has passed
    with pytest.raises(Unreadable, match="no data key 1 for this scope"):
        await opened(sessions, shredded, row, gone)
    assert await opened(sessions, kept, row, still) == "another clinic's"
    assert ring.unwrapped == unwrapped


async def test_rotating_the_kek_wraps_every_key_again_and_changes_no_value(
    sessions, database, superuser_engine
) -> None:
    keys.configure(keyring("old"))
    values = {}
    for scope in (keys.PLATFORM, str(uuid.uuid4())):
        row = uuid.uuid4()
        values[(scope, row)] = await sealed_in(sessions, scope, row, f"value in {scope}")

    assert await keys.rotate_all(database.owner_url, keyring("new", "old")) == 2
    assert {kek for _, _, kek in await stored_keys(superuser_engine)} == {"local:new"}
    assert await keys.rotate_all(database.owner_url, keyring("new", "old")) == 0

    keys.configure(keyring("new"))  # the old key retired
    for (scope, row), sealed in values.items():
        assert await opened(sessions, scope, row, sealed) == f"value in {scope}"
    keys.configure(keyring("old"))
    with pytest.raises(Unreadable):
        await opened(sessions, *next(iter(values)), next(iter(values.values())))


async def test_data_keys_move_to_kms_and_a_key_moved_to_another_scope_does_not_unwrap(
    sessions, database, superuser_engine, s3
) -> None:
    client = s3.client("kms")
    arn = client.create_key(Description="vetify tests")["KeyMetadata"]["Arn"]
    keys.configure(keyring("local"))
    scope, row = str(uuid.uuid4()), uuid.uuid4()
    sealed = await sealed_in(sessions, scope, row, "moved to KMS")

    assert await keys.rotate_all(database.owner_url, AwsKms(arn, client, keyring("local"))) >= 1
    assert {kek for _, _, kek in await stored_keys(superuser_engine)} == {f"aws-kms:{arn}"}
    keys.configure(AwsKms(arn, client))  # KMS alone from now on
    assert await opened(sessions, scope, row, sealed) == "moved to KMS"

    # A scope's wrapped key copied over another's: KMS's encryption context refuses it.
    other, other_row = str(uuid.uuid4()), uuid.uuid4()
    its_own = await sealed_in(sessions, other, other_row, "its own")
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys WHERE scope = :a)"
                " WHERE scope = :b"
            ),
            {"a": scope, "b": other},
        )
    keys.configure(AwsKms(arn, client))
    with pytest.raises(Unreadable):
        await opened(sessions, other, other_row, its_own)


async def test_vetify_keys_rotate_kek_says_what_it_wrapped(
    sessions, cli_env, monkeypatch, capsys, superuser_engine
) -> None:
    keys.configure(keyring("before"))
    await sealed_in(sessions, keys.PLATFORM, uuid.uuid4(), "one")
    monkeypatch.setenv("VETIFY_ENCRYPTION_KEYS", written(keyring("after", "before")))
    await asyncio.to_thread(cli.main, ["keys", "rotate-kek"])
    assert capsys.readouterr().out.strip() == (
        "1 data keys wrapped again; all are wrapped by local:after"
    )
    assert {kek for _, _, kek in await stored_keys(superuser_engine)} == {"local:after"}


async def _add_user_with_secret(engine: AsyncEngine, secret: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users (id, email, name, password_hash, active, totp_secret)"
                " VALUES (:id, :email, 'Before', 'x', true, :secret)"
            ),
            {"id": user_id, "email": f"{user_id}@example.org", "secret": secret},
        )
    return user_id


async def test_migration_0012_seals_the_totp_secrets_and_its_downgrade_opens_them(
    database, superuser_engine, sessions
) -> None:
    ring = keyring("migrating")
    config = migrate.alembic_config(database.owner_url, APP_ROLE, ring)
    await asyncio.to_thread(command.downgrade, config, "0011")
    secrets = {
        await _add_user_with_secret(superuser_engine, f"SECRET{n:026d}"): n for n in range(3)
    }

    # Without keys there is nothing to seal them with: refused, and nothing changed.
    with pytest.raises(RuntimeError, match="vetify migrate"):
        await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE)
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(totp_secret) FROM users")) == 3

    await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE, "head", ring)
    keys.configure(ring)
    async with superuser_engine.connect() as connection:
        rows = (await connection.execute(text("SELECT id, totp_secret_sealed FROM users"))).all()
    assert len(rows) == 3
    async with sessions() as session, session.begin():
        for user_id, sealed in rows:
            assert b"SECRET" not in sealed
            assert (
                await keys.unseal(session, keys.PLATFORM, "users.totp_secret", user_id, sealed)
                == f"SECRET{secrets[user_id]:026d}"
            )

    await asyncio.to_thread(command.downgrade, config, "0011")
    async with superuser_engine.connect() as connection:
        back = dict((await connection.execute(text("SELECT id, totp_secret FROM users"))).all())
    assert back == {user_id: f"SECRET{n:026d}" for user_id, n in secrets.items()}


async def test_vetify_keys_and_audit_anchor_name_the_owner_url_they_need(
    cli_env, monkeypatch
) -> None:
    monkeypatch.delenv("VETIFY_DATABASE_OWNER_URL")
    monkeypatch.setenv("VETIFY_AUDIT_SIGNING_KEY", base64.b64encode(os.urandom(32)).decode())
    for arguments in (["keys", "rotate-kek"], ["audit", "anchor"]):
        with pytest.raises(SystemExit, match="set VETIFY_DATABASE_OWNER_URL"):
            await asyncio.to_thread(cli.main, arguments)
