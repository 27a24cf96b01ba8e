"""Retention of the audit trail (ADR 0027, migration 0015): ``vetify audit prune`` removes each
clinic's events older than ``VETIFY_AUDIT_RETENTION_DAYS`` (7 years by default), oldest first,
and moves the clinic's chain base to the last one removed, from which ``vetify audit verify``
then checks the chain. The base moves only onto an event an anchor signed before the cutoff
(``vetify audit anchor``): that anchor's time proves to ``verify`` the event was old, so a base
moved by anyone else is found. Old events no such anchor holds yet wait for a later prune.

An operator's command, like ``vetify audit anchor``: it reads which clinics have a trail as
the backup role and prunes as the schema's owner, the one role that may move a base (the
trigger lets an event go only once its base is past it). Each clinic is pruned in a
transaction of its own, holding its head's lock, so no event is appended while its chain's start
moves. Without ``--apply`` it only says what it would remove.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.audit.models import AuditHead
from app.db.session import role_engine


@dataclass(frozen=True, slots=True)
class Pruned:
    clinic_id: uuid.UUID | None
    """None: the security events of no clinic (``security_events``)."""
    events: int
    """How many events went (or would go, in a dry run)."""
    base_seq: int
    """The chain's base after it: the last event pruned (0: none ever)."""
    waiting: int = 0
    """Old events kept because no anchor signed before the cutoff holds one after them yet."""

    def line(self, cutoff: dt.datetime, *, applied: bool) -> str:
        whose = f"clinic {self.clinic_id}" if self.clinic_id else "no clinic's (security events)"
        said = f"{whose}: {self.events} events from before {cutoff:%Y-%m-%d}"
        said += " would be pruned" if not applied else " pruned"
        if applied and self.clinic_id:
            said += f"; its chain starts after event {self.base_seq}"
        if self.waiting:
            said += f"; {self.waiting} more kept until an anchor from before then holds them"
        return said


async def prune_trails(
    backup_url: str, owner_url: str, cutoff: dt.datetime, *, apply: bool
) -> list[Pruned]:
    """Each clinic's events from before ``cutoff``, pruned if ``apply`` (else only counted)."""
    engines = [role_engine(url) for url in (backup_url, owner_url)]
    reader, owner = engines
    try:
        async with reader.connect() as connection:
            clinics = sorted(await connection.scalars(select(AuditHead.tenant_id)))
        found = []
        for clinic_id in clinics:
            async with owner.begin() as connection:
                found.append(await _prune(connection, clinic_id, cutoff, apply=apply))
        async with owner.begin() as connection:
            found.append(await _prune_global(connection, cutoff, apply=apply))
        return found
    finally:
        for engine in engines:
            await engine.dispose()


async def _prune(
    connection: AsyncConnection, clinic_id: uuid.UUID, cutoff: dt.datetime, *, apply: bool
) -> Pruned:
    clinic = {"clinic": clinic_id}
    # The heads and events are behind row-level security, forced on their owner too.
    await connection.execute(
        text("SELECT set_config('app.tenant_id', :clinic, true)"), {"clinic": str(clinic_id)}
    )
    head = (
        await connection.execute(
            text("SELECT seq, base_seq FROM audit_heads WHERE tenant_id = :clinic FOR UPDATE"),
            clinic,
        )
    ).one()
    # The events before the first one that is not old: a prefix, so that an event stamped
    # long ago by a host whose clock was wrong cannot take newer ones with it.
    kept = await connection.scalar(
        text(
            "SELECT min(seq) FROM audit_events"
            " WHERE tenant_id = :clinic AND seq > :base AND created_at >= :cutoff"
        ),
        {**clinic, "base": head.base_seq, "cutoff": cutoff},
    )
    old_end = head.seq if kept is None else kept - 1
    base = head.base_seq
    # The newest of those events that an anchor from before the cutoff signed, as it still is.
    last_old = await connection.scalar(
        text(
            "SELECT max(a.seq) FROM audit_anchors a JOIN audit_events e"
            " ON e.tenant_id = a.clinic_id AND e.seq = a.seq AND e.hash = a.hash"
            " WHERE a.clinic_id = :clinic AND a.seq > :base AND a.seq <= :end"
            " AND a.anchored_at < :cutoff"
        ),
        {**clinic, "base": base, "end": old_end, "cutoff": cutoff},
    )
    if last_old is None:
        return Pruned(clinic_id, 0, base, waiting=max(old_end - base, 0))
    waiting = old_end - last_old
    if apply:
        await connection.execute(
            text(
                "UPDATE audit_heads SET base_seq = :last, base_hash = ("
                "  SELECT hash FROM audit_events WHERE tenant_id = :clinic AND seq = :last"
                ") WHERE tenant_id = :clinic"
            ),
            {**clinic, "last": last_old},
        )
        await connection.execute(
            text("DELETE FROM audit_events WHERE tenant_id = :clinic AND seq <= :last"),
            {**clinic, "last": last_old},
        )
    return Pruned(clinic_id, last_old - base, last_old if apply else base, waiting)


async def _prune_global(connection: AsyncConnection, cutoff: dt.datetime, *, apply: bool) -> Pruned:
    """The security events of no clinic from before ``cutoff`` (a year old at least: the
    table's trigger lets no younger one go)."""
    old = {"cutoff": cutoff}
    if not apply:
        count = await connection.scalar(
            text("SELECT count(*) FROM security_events WHERE created_at < :cutoff"), old
        )
        return Pruned(None, int(count or 0), 0)
    gone = await connection.execute(
        text("DELETE FROM security_events WHERE created_at < :cutoff RETURNING id"), old
    )
    return Pruned(None, len(gone.all()), 0)
