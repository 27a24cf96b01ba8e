"""A scope's data key replaced (app/keys/rotation.py, `vetify keys rotate-dek`, ADR 0028): every
value sealed again with the new key in batches while reads go on, an interrupted run taken up
again with the same new key, a value sealed meanwhile with the old one caught by the next run,
old keys retired only once nothing names them, and each column rotated in its own scope."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app import cli
from app.auth import mfa
from app.auth.models import Role
from app.keys import rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.storage import storage_from
from tests.harness.world import World

PROBE = rotation.SealedColumn("sealed_probe", "secret_sealed", "sealed_probe.secret", "tenant_id")
"""A clinic's column of sealed values, made for these tests (none is sealed per clinic yet)."""


pytestmark = pytest.mark.usefixtures("fresh_process_keys")


@pytest.fixture
def sessions(app_engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(app_engine, expire_on_commit=False)


async def secrets_of(engine: AsyncEngine) -> dict[uuid.UUID, bytes]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id, totp_secret_sealed FROM users WHERE totp_secret_sealed IS NOT NULL")
        )
        return {row.id: row.totp_secret_sealed for row in rows}


async def versions(engine: AsyncEngine, scope: str) -> list[int]:
    async with engine.connect() as connection:
        found = await connection.scalars(
            text("SELECT version FROM data_keys WHERE scope = :s ORDER BY version"), {"s": scope}
        )
        return list(found)


async def enrolled(world: World, count: int) -> dict[uuid.UUID, str]:
    clinic = await world.clinic(tuple(Role)[:count])
    return {actor.user.id: await world.enrol_mfa(actor.user) for actor in clinic.actors.values()}


async def read_back(sessions, user_id: uuid.UUID, sealed: bytes) -> str:
    async with sessions() as session, session.begin():
        return await keys.unseal(session, keys.PLATFORM, mfa.SEALED_IN, user_id, sealed)


async def test_every_value_is_sealed_again_with_a_new_key_while_reads_go_on(
    world: World, database, sessions, superuser_engine, settings, monkeypatch
) -> None:
    monkeypatch.setattr(rotation, "BATCH", 2)
    secrets = await enrolled(world, 5)
    before = await secrets_of(superuser_engine)
    assert {sealing.version_of(v) for v in before.values()} == {1}
    wrapper = keys.wrapper_from(settings)
    reading = True

    async def reads() -> int:
        count = 0
        while reading:
            for user_id, sealed in (await secrets_of(superuser_engine)).items():
                assert await read_back(sessions, user_id, sealed) == secrets[user_id]
                count += 1
            await asyncio.sleep(0)
        return count

    reader = asyncio.create_task(reads())
    done = await rotation.rotate_dek(
        database.owner_url, wrapper, storage_from(settings), keys.PLATFORM
    )
    reading = False
    assert await reader > 0

    assert (done.version, done.resealed, done.left, done.retired) == (2, len(secrets), 0, [])
    after = await secrets_of(superuser_engine)
    assert {sealing.version_of(v) for v in after.values()} == {2}
    assert all(after[u] != before[u] for u in secrets)
    for user_id, sealed in after.items():
        assert await read_back(sessions, user_id, sealed) == secrets[user_id]
    assert await versions(superuser_engine, keys.PLATFORM) == [1, 2]  # not retired unasked


async def test_an_interrupted_run_goes_on_with_its_key_and_a_late_old_value_is_caught(
    world: World, database, sessions, superuser_engine, settings, monkeypatch
) -> None:
    monkeypatch.setattr(rotation, "BATCH", 1)
    secrets = await enrolled(world, 3)
    wrapper = keys.wrapper_from(settings)
    reseal = rotation._reseal
    calls = 0

    async def cut(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("the operator's session dropped")
        return await reseal(*args, **kwargs)

    monkeypatch.setattr(rotation, "_reseal", cut)
    with pytest.raises(ConnectionError):
        await rotation.rotate_dek(
            database.owner_url, wrapper, storage_from(settings), keys.PLATFORM
        )
    monkeypatch.setattr(rotation, "_reseal", reseal)
    assert sorted(sealing.version_of(v) for v in (await secrets_of(superuser_engine)).values()) == [
        1,
        1,
        2,
    ]

    # A process that read version 1 before the new key was made still seals with it.
    late = next(iter(secrets))
    async with sessions() as session, session.begin():
        await session.execute(
            text("UPDATE users SET totp_secret_sealed = :s WHERE id = :id"),
            {"s": await mfa.seal_secret(session, late, secrets[late]), "id": late},
        )
    assert sealing.version_of((await secrets_of(superuser_engine))[late]) == 1

    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)  # every process has read it by now
    done = await rotation.rotate_dek(
        database.owner_url, wrapper, storage_from(settings), keys.PLATFORM, retire=True
    )
    assert (done.version, done.left, done.retired) == (2, 0, [1])  # no third key made
    assert await versions(superuser_engine, keys.PLATFORM) == [2]
    for user_id, sealed in (await secrets_of(superuser_engine)).items():
        assert sealing.version_of(sealed) == 2
        assert await read_back(sessions, user_id, sealed) == secrets[user_id]


@pytest.fixture
async def probe(database, world: World) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    """Two clinics, each with values sealed with its own key in ``sealed_probe``."""
    owner = create_async_engine(database.owner_url)
    async with owner.begin() as connection:
        await connection.execute(
            text(
                "CREATE TABLE sealed_probe"
                " (id uuid PRIMARY KEY, tenant_id uuid, secret_sealed bytea)"
            )
        )
    rotation.seals(PROBE)
    try:
        clinics = ((await world.clinic(())).id, (await world.clinic(())).id)
        sessions = async_sessionmaker(owner, expire_on_commit=False)
        for clinic_id in clinics:
            for n in range(3):
                row_id = uuid.uuid4()
                async with sessions() as session, session.begin():
                    sealed = await keys.seal(session, str(clinic_id), PROBE.field, row_id, f"v{n}")
                    await session.execute(
                        text("INSERT INTO sealed_probe VALUES (:id, :c, :s)"),
                        {"id": row_id, "c": clinic_id, "s": sealed},
                    )
        yield clinics
    finally:
        rotation.SEALED.remove(PROBE)
        async with owner.begin() as connection:
            await connection.execute(text("DROP TABLE sealed_probe"))
        await owner.dispose()


async def test_a_clinics_rotation_touches_its_own_values_only(
    database, probe, superuser_engine, settings, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    ours, theirs = probe
    wrapper = keys.wrapper_from(settings)

    done = await rotation.rotate_dek(
        database.owner_url, wrapper, storage_from(settings), str(ours), retire=True
    )

    assert (done.resealed, done.left, done.retired) == (3, 0, [1])
    async with superuser_engine.connect() as connection:
        rows = await connection.execute(text("SELECT tenant_id, secret_sealed FROM sealed_probe"))
        by_clinic = {(row.tenant_id, sealing.version_of(row.secret_sealed)) for row in rows}
    assert by_clinic == {(ours, 2), (theirs, 1)}
    platform = await rotation.rotate_dek(
        database.owner_url, wrapper, storage_from(settings), keys.PLATFORM
    )
    assert platform.resealed == 0  # the clinics' column is in no platform scope
    unsealed = await rotation.rotate_dek(
        database.owner_url, wrapper, storage_from(settings), str(uuid.uuid4())
    )
    assert (unsealed.version, unsealed.resealed) == (1, 0)  # a scope's first key, then

    # Their key shredded (only a version 2 that sealed nothing left): nothing to open, nothing
    # rewritten.
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("UPDATE data_keys SET version = 2 WHERE scope = :s"), {"s": str(theirs)}
        )
    with pytest.raises(sealing.Unreadable, match="no data key 1"):
        await rotation.rotate_dek(database.owner_url, wrapper, storage_from(settings), str(theirs))
    async with superuser_engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT secret_sealed FROM sealed_probe WHERE tenant_id = :c"), {"c": theirs}
        )
        assert {sealing.version_of(row.secret_sealed) for row in rows} == {1}


async def test_older_keys_are_kept_while_a_process_may_still_seal_with_them(
    world: World, database, superuser_engine, settings
) -> None:
    await enrolled(world, 2)
    done = await rotation.rotate_dek(
        database.owner_url,
        keys.wrapper_from(settings),
        storage_from(settings),
        keys.PLATFORM,
        retire=True,
    )
    assert (done.left, done.retired, done.too_soon) == (0, [], True)
    assert await versions(superuser_engine, keys.PLATFORM) == [1, 2]


async def test_vetify_keys_rotate_dek_says_what_it_did(
    world: World, cli_env, capsys, superuser_engine, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    secrets = await enrolled(world, 2)
    await asyncio.to_thread(cli.main, ["keys", "rotate-dek", "--retire"])
    assert capsys.readouterr().out.strip() == (
        f"platform: {len(secrets)} values and 0 files sealed again with data key 2; 0 left on"
        " older keys;"
        " retired [1]"
    )
    assert await versions(superuser_engine, keys.PLATFORM) == [2]


async def test_vetify_keys_rotate_dek_fails_while_values_are_left_on_an_older_key(
    cli_env, capsys, monkeypatch
) -> None:
    async def half_done(*_: object, **__: object) -> rotation.Rotated:
        return rotation.Rotated("platform", 3, 10, 2, [])

    monkeypatch.setattr(rotation, "rotate_dek", half_done)
    with pytest.raises(SystemExit, match="2 values or files are on an older key"):
        await asyncio.to_thread(cli.main, ["keys", "rotate-dek"])
    assert "10 values and 0 files sealed again with data key 3; 2 left" in capsys.readouterr().out


async def test_a_sealed_column_no_domain_declared_stops_the_run_before_any_key_is_made(
    database, probe, superuser_engine, settings
) -> None:
    ours, _ = probe
    rotation.SEALED.remove(PROBE)  # as if its domain had not been imported
    try:
        with pytest.raises(RuntimeError, match=r"sealed_probe\.secret_sealed"):
            await rotation.rotate_dek(
                database.owner_url, keys.wrapper_from(settings), storage_from(settings), str(ours)
            )
    finally:
        rotation.seals(PROBE)
    assert await versions(superuser_engine, str(ours)) == [1]


async def test_vetify_keys_rotate_dek_says_when_it_is_too_soon_to_retire(
    world: World, cli_env, capsys, superuser_engine
) -> None:
    await enrolled(world, 1)
    await asyncio.to_thread(cli.main, ["keys", "rotate-dek", "--retire"])
    assert "older keys kept: the new one is younger than 120 s" in capsys.readouterr().out
    assert await versions(superuser_engine, keys.PLATFORM) == [1, 2]
