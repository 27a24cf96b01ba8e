"""Anchors of the audit trail (ADR 0027): what the hash chain alone cannot see, a trail cut
short or rewritten by someone who also made its hashes and head again (the schema's owner,
with the append-only triggers off), is found once an anchor signed the head before; anchors
kept outside the database find it even when the database's anchors went too; an anchor not
signed by the anchoring key is reported; and `vetify audit anchor` / `verify --anchors`."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from app import cli
from app.audit import anchors
from app.audit.chain import link
from app.audit.service import _stored, verify
from app.audit.trail import EVENTS
from fixtures.factories import CustomerFactory
from tests.harness.world import World

KEY = Ed25519PrivateKey.generate()


async def clinic_with_events(world: World):
    clinic = await world.clinic(roles=())
    for _ in range(3):
        await world.make(clinic, CustomerFactory)
    return clinic


async def anchor_now(database) -> list[anchors.Anchor]:
    return await anchors.anchor_trails(database.backup_url, database.owner_url, KEY)


async def judged(engine, clinic_id, outside=()):
    async with engine.connect() as connection:
        return await verify(connection, clinic_id, KEY.public_key(), outside)


async def as_owner_unguarded(engine, *statements: str, **values: object) -> None:
    """What the schema's owner can do: the append-only triggers off, statements run, back on."""
    async with engine.begin() as connection:
        for table in ("audit_events", "audit_anchors"):
            await connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            await connection.execute(text(statement), values)
        for table in ("audit_events", "audit_anchors"):
            await connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


async def cut_short(engine, clinic_id, keep: int) -> None:
    """Events after ``keep`` deleted and the head moved back to event ``keep``: a chain that
    checks out."""
    await as_owner_unguarded(
        engine,
        "DELETE FROM audit_events WHERE tenant_id = :c AND seq > :keep",
        "UPDATE audit_heads SET seq = :keep, hash = (SELECT hash FROM audit_events"
        " WHERE tenant_id = :c AND seq = :keep) WHERE tenant_id = :c",
        c=clinic_id,
        keep=keep,
    )


async def test_a_trail_cut_short_after_an_anchor_is_found_and_not_without_one(
    world: World, database, superuser_engine
) -> None:
    clinic = await clinic_with_events(world)
    made = [a for a in await anchor_now(database) if a.clinic_id == clinic.id]
    [anchor] = made
    assert (await judged(superuser_engine, clinic.id)).anchored == anchor.seq
    await cut_short(superuser_engine, clinic.id, anchor.seq - 2)

    broken = (await judged(superuser_engine, clinic.id)).broken
    assert broken is not None
    assert broken.seq == anchor.seq
    assert broken.reason.endswith(f"but the trail ends at event {anchor.seq - 2}: cut short")

    # The owner deletes the database's anchors too: the chain alone sees nothing amiss...
    await as_owner_unguarded(
        superuser_engine, "DELETE FROM audit_anchors WHERE clinic_id = :c", c=clinic.id
    )
    assert (await judged(superuser_engine, clinic.id)).broken is None
    # ...the anchor kept elsewhere still does.
    kept = anchors.read_lines([anchor.line()])
    broken = (await judged(superuser_engine, clinic.id, kept)).broken
    assert broken is not None
    assert "cut short" in broken.reason


async def test_a_trail_rewritten_with_its_hashes_made_again_breaks_at_the_anchored_event(
    world: World, database, superuser_engine
) -> None:
    clinic = await clinic_with_events(world)
    [anchor] = [a for a in await anchor_now(database) if a.clinic_id == clinic.id]
    async with superuser_engine.connect() as connection:
        rows = await connection.execute(
            select(EVENTS).where(EVENTS.c.tenant_id == clinic.id).order_by(EVENTS.c.seq)
        )
        events = [_stored(row) for row in rows.mappings()]
    # Event 2 says another role did it; every link from there on is made again.
    prev, rewritten = events[0].hash, []
    for event in events[1:]:
        entry = (
            event.entry if event.entry.seq != 2 else dataclasses.replace(event.entry, role="vet")
        )
        prev = link(prev, entry)
        rewritten.append((entry, prev))
    statements, values = [], {"c": clinic.id}
    for n, (entry, digest) in enumerate(rewritten):
        statements.append(
            f"UPDATE audit_events SET role = :role{n}, hash = :hash{n},"
            f" prev_hash = :prev{n} WHERE tenant_id = :c AND seq = {entry.seq}"
        )
        values |= {
            f"role{n}": entry.role,
            f"hash{n}": digest,
            f"prev{n}": events[entry.seq - 2].hash if n == 0 else rewritten[n - 1][1],
        }
    statements.append("UPDATE audit_heads SET hash = :head WHERE tenant_id = :c")
    values["head"] = rewritten[-1][1]
    await as_owner_unguarded(superuser_engine, *statements, **values)

    broken = (await judged(superuser_engine, clinic.id)).broken
    assert broken is not None
    assert broken.seq == anchor.seq
    assert broken.reason.endswith("another: the trail was rewritten")
    await as_owner_unguarded(
        superuser_engine, "DELETE FROM audit_anchors WHERE clinic_id = :c", c=clinic.id
    )
    assert (await judged(superuser_engine, clinic.id)).broken is None  # invisible without


async def test_anchors_are_made_for_new_events_only_and_a_forged_one_is_reported(
    world: World, database, superuser_engine
) -> None:
    clinic = await clinic_with_events(world)
    first = [a for a in await anchor_now(database) if a.clinic_id == clinic.id]
    assert [a for a in await anchor_now(database) if a.clinic_id == clinic.id] == []
    await world.make(clinic, CustomerFactory)
    [second] = [a for a in await anchor_now(database) if a.clinic_id == clinic.id]
    assert second.seq > first[0].seq
    assert (await judged(superuser_engine, clinic.id)).broken is None

    forged = anchors.sign(Ed25519PrivateKey.generate(), clinic.id, second.seq, second.hash)
    # The triggers hold for whoever has not switched them off, a superuser included.
    with pytest.raises(DBAPIError, match="audit anchors are never changed or deleted"):
        async with superuser_engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM audit_anchors WHERE clinic_id = :c"), {"c": clinic.id}
            )
    broken = (await judged(superuser_engine, clinic.id, [forged])).broken
    assert broken is not None
    assert broken.reason.endswith("is not signed")


def _written(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def test_vetify_audit_anchor_prints_lines_that_verify_holds_a_trail_to(
    world: World, superuser_engine, cli_env, monkeypatch, capsys, tmp_path
) -> None:
    clinic = await clinic_with_events(world)
    with pytest.raises(SystemExit, match="set VETIFY_AUDIT_SIGNING_KEY"):
        await asyncio.to_thread(cli.main, ["audit", "anchor"])
    seed = os.urandom(32)
    monkeypatch.setenv("VETIFY_AUDIT_SIGNING_KEY", _written(seed))
    await asyncio.to_thread(cli.main, ["audit", "anchor"])
    lines = capsys.readouterr().out.splitlines()
    [mine] = [a for a in anchors.read_lines(lines) if a.clinic_id == clinic.id]
    kept = tmp_path / "anchors.jsonl"
    kept.write_text("\n" + "\n\n".join(lines) + "\n")  # its blank lines are skipped
    arguments = ["audit", "verify", "--clinic", str(clinic.id), "--anchors", str(kept)]
    await asyncio.to_thread(cli.main, arguments)  # the signing key's public half checks
    assert capsys.readouterr().out.strip().endswith(f"intact, anchored to event {mine.seq}")

    # An auditor's machine: the public key alone.
    monkeypatch.delenv("VETIFY_AUDIT_SIGNING_KEY")
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    monkeypatch.setenv("VETIFY_AUDIT_PUBLIC_KEY", _written(public))
    await asyncio.to_thread(cli.main, arguments)
    assert capsys.readouterr().out.strip().endswith(f"intact, anchored to event {mine.seq}")

    await cut_short(superuser_engine, clinic.id, 1)
    await as_owner_unguarded(superuser_engine, "DELETE FROM audit_anchors")
    with pytest.raises(SystemExit) as failed:
        await asyncio.to_thread(cli.main, arguments)
    assert failed.value.code == 1
    assert "cut short" in capsys.readouterr().out
    kept.write_text("not an anchor\n")
    with pytest.raises(SystemExit, match="line 1 is not an anchor"):
        await asyncio.to_thread(cli.main, arguments)
    kept.unlink()
    with pytest.raises(SystemExit, match=r"--anchors .*anchors.jsonl: \[Errno 2\]"):
        await asyncio.to_thread(cli.main, arguments)
