"""Retention of the audit trail (app/audit/retention.py, migration 0015): `vetify audit prune`
removes a clinic's events older than the retention, oldest first, up to the newest that an
anchor signed before the cutoff; the chain is then checked from its new base, which that anchor
must hold, anchors of pruned events are let go, and nothing but the owner's prune may delete an
event, or only one the base is past."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.audit import anchors, retention
from app.audit.chain import GENESIS, Break
from app.audit.models import AuditAnchor
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


async def clinic_old_and_new(world: World, clock: Clock, database=None):
    """A clinic whose first events are from 3000 days ago, and its newer ones from now; with
    ``database``, its old head anchored then (what lets a prune take them)."""
    now = clock.now
    clock.now = now - YEARS
    clinic = await world.clinic(roles=())
    await world.make(clinic, CustomerFactory)
    if database is not None:
        await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)
    clock.now = now
    await world.make(clinic, CustomerFactory)
    return clinic


async def move_start(engine, clinic_id, seq: int) -> None:
    """What the schema's owner can do with the triggers off: the chain's start moved onto
    event ``seq`` (its hash as it is) and every event up to it deleted."""
    async with engine.begin() as connection:
        await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        await connection.execute(
            text(
                "UPDATE audit_heads SET base_seq = :s, base_hash = (SELECT hash FROM audit_events"
                " WHERE tenant_id = :c AND seq = :s) WHERE tenant_id = :c"
            ),
            {"c": clinic_id, "s": seq},
        )
        await connection.execute(
            text("DELETE FROM audit_events WHERE tenant_id = :c AND seq <= :s"),
            {"c": clinic_id, "s": seq},
        )
        await connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


async def test_prune_removes_the_old_events_only_and_the_chain_holds_from_its_new_base(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock, database)
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


async def test_old_events_wait_for_an_anchor_signed_before_the_cutoff(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    """An anchor's time bounds its event's from above: only one signed before the cutoff shows
    the event was old. Without one nothing is pruned; one signed since (of an old event) does
    not count; one whose hash the trail no longer has (a rewrite) does not either."""
    clinic = await clinic_old_and_new(world, clock)
    events = await seqs(superuser_engine, clinic.id)
    cutoff = clock.now - dt.timedelta(days=2555)

    async def prune() -> retention.Pruned:
        done = await retention.prune_trails(
            database.backup_url, database.owner_url, cutoff, apply=True
        )
        [found] = [p for p in done if p.clinic_id == clinic.id]
        return found

    await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)  # signed now
    unheld = await prune()
    assert (unheld.events, unheld.base_seq, unheld.waiting) == (0, 0, len(events) - 1)
    assert "kept until an anchor from before then holds them" in unheld.line(cutoff, applied=True)
    assert await seqs(superuser_engine, clinic.id) == events

    forged = anchors.sign(KEY, clinic.id, 1, b"\x01" * 32)
    async with superuser_engine.begin() as connection:
        await connection.execute(
            insert(AuditAnchor).values(
                clinic_id=clinic.id,
                seq=1,
                hash=forged.hash,
                signature=forged.signature,
                anchored_at=clock.now - YEARS,
            )
        )
    assert (await prune()).events == 0  # not the event the trail holds at 1
    assert await seqs(superuser_engine, clinic.id) == events


async def test_a_start_moved_by_other_than_retention_breaks_the_chain(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    """The schema's owner can move the chain's start and delete what is before it (triggers
    off). Moved onto the head, the chain alone holds (nothing after it to check): the anchor
    holding the start is younger than the retention. Moved onto an event no anchor holds, or
    held to another hash: found too. Each is checked against anchors kept outside."""
    clinic = await clinic_old_and_new(world, clock, database)
    await world.make(clinic, CustomerFactory)
    outside = await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)
    head = max(anchor.seq for anchor in outside if anchor.clinic_id == clinic.id)
    kept = dt.timedelta(days=2555)

    async def verdict() -> Break | None:
        async with superuser_engine.connect() as connection:
            found = await verify(connection, clinic.id, KEY.public_key(), outside, kept)
        return found.broken

    assert await verdict() is None
    await move_start(superuser_engine, clinic.id, head)
    moved = await verdict()
    assert moved is not None
    assert (moved.seq, moved.reason) == (
        head,
        f"the chain starts after event {head}, anchored within the retention (2555 days):"
        " events were removed that it keeps",
    )
    async with superuser_engine.connect() as connection:  # the chain alone finds nothing
        assert (await verify(connection, clinic.id)).broken is None


async def test_a_start_no_anchor_holds_or_holds_otherwise_breaks_the_chain(
    world: World, database, superuser_engine, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock, database)
    await world.make(clinic, CustomerFactory)
    await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)
    async with superuser_engine.connect() as connection:
        held = [anchor.seq for anchor in await anchors.stored(connection, clinic.id)]
    unanchored = max(set(await seqs(superuser_engine, clinic.id)) - set(held))
    assert held[0] < unanchored

    async with superuser_engine.begin() as connection:  # an anchored start, another hash
        await connection.execute(
            text("UPDATE audit_heads SET base_seq = :s, base_hash = :h WHERE tenant_id = :c"),
            {"c": clinic.id, "s": held[0], "h": b"\x02" * 32},
        )
    otherwise = (await judged(superuser_engine, clinic.id)).broken
    assert otherwise is not None
    assert otherwise.seq == held[0]
    assert otherwise.reason.endswith(f"holds event {held[0]}, another: the chain's start was moved")

    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("UPDATE audit_heads SET base_seq = 0, base_hash = :h WHERE tenant_id = :c"),
            {"c": clinic.id, "h": GENESIS},
        )
    assert (await judged(superuser_engine, clinic.id)).broken is None
    await move_start(superuser_engine, clinic.id, unanchored)
    moved = (await judged(superuser_engine, clinic.id)).broken
    assert moved is not None
    assert (moved.seq, moved.reason) == (
        unanchored,
        f"the chain starts after event {unanchored}, which no anchor holds: moved",
    )


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
    clinic = await clinic_old_and_new(world, clock, database)
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
    world: World, database, superuser_engine, cli_env, monkeypatch, capsys, clock: Clock
) -> None:
    clinic = await clinic_old_and_new(world, clock, database)
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
    clinic = await clinic_old_and_new(world, clock, database)
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
    clinic = await clinic_old_and_new(world, clock, database)
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
