"""Retention of the audit trail (app/audit/retention.py, migration 0015): `vetify audit prune`
removes a clinic's events older than the retention, oldest first; the chain is then checked from
its new base, anchors of pruned events are let go, and nothing but the owner's prune may delete
an event, or only one the base is past."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.audit import anchors, retention
from app.audit.service import verify
from app.auth.models import Role
from app.db import migrate
from fixtures.factories import CustomerFactory
from tests.harness.api import login
from tests.harness.clock import Clock
from tests.harness.databases import APP_ROLE
from tests.harness.world import World

YEARS = dt.timedelta(days=3000)
KEY = Ed25519PrivateKey.from_private_bytes(os.urandom(32))


async def seqs(engine, clinic_id) -> list[int]:
    async with engine.connect() as connection:
        found = await connection.scalars(
            text("SELECT seq FROM audit_events WHERE tenant_id = :c ORDER BY seq"), {"c": clinic_id}
        )
        return list(found)


async def judged(engine, clinic_id):
    async with engine.connect() as connection:
        return await verify(connection, clinic_id, KEY.public_key())


async def clinic_old_and_new(world: World, clock: Clock):
    """A clinic whose first events are from 3000 days ago, and its newer ones from now."""
    now = clock.now
    clock.now = now - YEARS
    clinic = await world.clinic(roles=())
    await world.make(clinic, CustomerFactory)
    clock.now = now
    await world.make(clinic, CustomerFactory)
    return clinic


async def test_prune_removes_the_old_events_only_and_the_chain_holds_from_its_new_base(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock)
    events = await seqs(superuser_engine, clinic.id)
    async with superuser_engine.connect() as connection:
        old = await connection.scalar(
            text("SELECT max(seq) FROM audit_events WHERE tenant_id = :c AND created_at < :t"),
            {"c": clinic.id, "t": clock.now - dt.timedelta(days=365)},
        )
    assert 0 < old < events[-1]
    cutoff = clock.now - dt.timedelta(days=2555)

    looked = await retention.prune_trails(
        database.backup_url, database.owner_url, cutoff, apply=False
    )
    [would] = [p for p in looked if p.clinic_id == clinic.id]
    assert (would.events, would.base_seq) == (old, 0)
    assert await seqs(superuser_engine, clinic.id) == events  # a dry run removes nothing

    done = await retention.prune_trails(database.backup_url, database.owner_url, cutoff, apply=True)
    [pruned] = [p for p in done if p.clinic_id == clinic.id]
    assert (pruned.events, pruned.base_seq) == (old, old)
    assert await seqs(superuser_engine, clinic.id) == [s for s in events if s > old]
    verdict = await judged(superuser_engine, clinic.id)
    assert (verdict.broken, verdict.pruned, verdict.events) == (None, old, len(events) - old)

    await world.make(clinic, CustomerFactory)  # the chain goes on after its base
    assert (await judged(superuser_engine, clinic.id)).broken is None
    again = await retention.prune_trails(
        database.backup_url, database.owner_url, cutoff, apply=True
    )
    assert [p.events for p in again if p.clinic_id == clinic.id] == [0]


async def test_a_pruned_events_anchor_is_let_go_and_a_later_one_still_holds_the_chain(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    now = clock.now
    clock.now = now - YEARS
    clinic = await world.clinic(roles=())
    await world.make(clinic, CustomerFactory)
    [old] = [  # the old head, anchored then
        a
        for a in await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)
        if a.clinic_id == clinic.id
    ]
    clock.now = now
    await world.make(clinic, CustomerFactory)
    cutoff = now - dt.timedelta(days=2555)
    await retention.prune_trails(database.backup_url, database.owner_url, cutoff, apply=True)
    verdict = await judged(superuser_engine, clinic.id)
    assert (verdict.broken, verdict.pruned) == (None, old.seq)  # its anchor let go with it
    await world.make(clinic, CustomerFactory)
    await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)
    assert (await judged(superuser_engine, clinic.id)).broken is None

    # The newest event dropped, and the head moved back onto the one before it.
    async with superuser_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        last = await connection.execute(
            text(
                "DELETE FROM audit_events WHERE tenant_id = :c AND seq = (SELECT max(seq) FROM"
                " audit_events WHERE tenant_id = :c) RETURNING seq"
            ),
            {"c": clinic.id},
        )
        seq = last.scalar_one()
        await connection.execute(
            text(
                "UPDATE audit_heads SET seq = :s, hash = (SELECT hash FROM audit_events WHERE"
                " tenant_id = :c AND seq = :s) WHERE tenant_id = :c"
            ),
            {"c": clinic.id, "s": seq - 1},
        )
        await connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    broken = (await judged(superuser_engine, clinic.id)).broken
    assert broken is not None
    assert "cut short" in broken.reason


async def test_only_the_owners_prune_deletes_and_only_what_the_base_is_past(
    world: World, database, app_engine, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock)
    async with app_engine.connect() as connection:
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :c, false)"), {"c": str(clinic.id)}
        )
        with pytest.raises(DBAPIError, match="permission denied"):
            await connection.execute(text("UPDATE audit_heads SET base_seq = 1"))
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.connect() as connection:
            await connection.execute(
                text("SELECT set_config('app.tenant_id', :c, false)"), {"c": str(clinic.id)}
            )
            with pytest.raises(DBAPIError, match="never changed or deleted"):
                await connection.execute(text("DELETE FROM audit_events WHERE seq = 1"))
    finally:
        await owner.dispose()


async def test_vetify_audit_prune_is_a_dry_run_unless_applied(
    world: World, superuser_engine, cli_env, monkeypatch, capsys, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock)
    recent = await world.clinic(roles=())  # nothing to prune: not named
    events = await seqs(superuser_engine, clinic.id)

    await asyncio.to_thread(cli.main, ["audit", "prune"])
    said = capsys.readouterr()
    assert f"clinic {clinic.id}: " in said.out
    assert "would be pruned" in said.out
    assert "a dry run" in said.err
    assert str(recent.id) not in said.out
    assert await seqs(superuser_engine, clinic.id) == events

    monkeypatch.setenv("VETIFY_AUDIT_RETENTION_DAYS", "365")
    await asyncio.to_thread(cli.main, ["audit", "prune", "--apply"])
    [line] = [x for x in capsys.readouterr().out.splitlines() if str(clinic.id) in x]
    assert "pruned; its chain starts after event" in line
    assert len(await seqs(superuser_engine, clinic.id)) < len(events)
    monkeypatch.setenv("VETIFY_AUDIT_RETENTION_DAYS", "30")
    with pytest.raises(SystemExit):
        await asyncio.to_thread(cli.main, ["audit", "prune"])


async def test_an_event_stamped_long_ago_after_newer_ones_prunes_nothing_newer(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock)
    kept_from = (await seqs(superuser_engine, clinic.id))[-1]  # the last event made now...
    now = clock.now
    clock.now = now - YEARS  # ...then one by a host whose clock had gone back years
    await world.make(clinic, CustomerFactory)
    clock.now = now

    cutoff = now - dt.timedelta(days=2555)
    await retention.prune_trails(database.backup_url, database.owner_url, cutoff, apply=True)

    left = await seqs(superuser_engine, clinic.id)
    assert left[-1] > kept_from  # the late old-stamped events are kept...
    verdict = await judged(superuser_engine, clinic.id)
    assert verdict.broken is None
    assert verdict.pruned < left[0]  # ...and only the prefix before the first recent one went


async def test_security_events_of_no_clinic_older_than_the_retention_go_and_no_newer_one(
    database, superuser_engine
) -> None:
    async with superuser_engine.begin() as connection:
        for age in (3000, 400, 10):
            await connection.execute(
                text(
                    "INSERT INTO security_events (id, created_at, event, outcome, details)"
                    " VALUES (gen_random_uuid(), now() - make_interval(days => :age),"
                    " 'login_failed', 'refused', '{}')"
                ),
                {"age": age},
            )
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=2555)

    done = await retention.prune_trails(database.backup_url, database.owner_url, cutoff, apply=True)

    assert [p.events for p in done if p.clinic_id is None] == [1]
    async with superuser_engine.connect() as connection:
        ages = await connection.scalars(
            text("SELECT extract(day FROM now() - created_at)::int FROM security_events")
        )
        assert sorted(ages) == [10, 400]
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.connect() as connection:
            with pytest.raises(DBAPIError, match="never changed or deleted"):
                await connection.execute(
                    text(
                        "DELETE FROM security_events WHERE created_at > now() - interval '30 days'"
                    )
                )
    finally:
        await owner.dispose()


async def test_the_downgrades_refuse_to_lose_what_the_chains_are_checked_by(
    client, world: World, database, clock: Clock
) -> None:
    config = migrate.alembic_config(database.owner_url, APP_ROLE)
    clinic = await clinic_old_and_new(world, clock)
    await login(client, clinic.owner.user.email, "not the password")  # none of a clinic's
    refused = await client.post(
        "/api/v1/staff/invitations",
        json={"email": "x@example.org", "role": "owner"},
        headers=(await world.clinic((Role.owner, Role.receptionist)))
        .actors[Role.receptionist]
        .headers,
    )
    assert refused.status_code == 403  # a clinic's security event: in its chain

    with pytest.raises(RuntimeError, match="security events"):
        await asyncio.to_thread(command.downgrade, config, "0013")
    cutoff = clock.now - dt.timedelta(days=2555)
    await retention.prune_trails(database.backup_url, database.owner_url, cutoff, apply=True)
    with pytest.raises(RuntimeError, match="were pruned"):
        await asyncio.to_thread(command.downgrade, config, "0014")
