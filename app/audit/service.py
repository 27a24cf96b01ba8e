"""Reading the audit trail back: a clinic's chain checked end to end (``vetify audit verify``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields

from sqlalchemy import RowMapping, make_url, select
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.audit.chain import Break, Checker, Entry, Stored
from app.audit.models import AuditHead
from app.audit.trail import EVENTS

BATCH = 5_000
"""Events read at a time: a clinic's years of events are checked in bounded memory."""
_ENTRY = [field.name for field in fields(Entry)]


@dataclass(frozen=True, slots=True)
class Verdict:
    clinic_id: uuid.UUID
    events: int
    broken: Break | None


async def verify(connection: AsyncConnection, clinic_id: uuid.UUID) -> Verdict:
    """Recompute ``clinic_id``'s chain from its first event to its head. ``connection`` must see
    every row of the clinic: the backup role's, or one entered in the clinic."""
    head = (
        await connection.execute(
            select(AuditHead.seq, AuditHead.hash).where(AuditHead.tenant_id == clinic_id)
        )
    ).one_or_none()
    checker, counted, after = Checker(), 0, 0
    while True:
        rows = (
            (
                await connection.execute(
                    select(EVENTS)
                    .where(EVENTS.c.tenant_id == clinic_id, EVENTS.c.seq > after)
                    .order_by(EVENTS.c.seq)
                    .limit(BATCH)
                )
            )
            .mappings()
            .all()
        )
        for row in rows:
            broken = checker.feed(_stored(row))
            if broken is not None:
                return Verdict(clinic_id, counted, broken)
            counted += 1
        if len(rows) < BATCH:
            break
        after = rows[-1]["seq"]
    return Verdict(clinic_id, counted, checker.end((head.seq, head.hash) if head else None))


async def verify_trails(url: str, clinic_id: uuid.UUID | None = None) -> list[Verdict]:
    """Every clinic's chain (or ``clinic_id``'s), read with ``url``: the backup role's, which
    sees every clinic (any driver named in it is asyncpg's)."""
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.connect() as connection:
            clinics = (
                [clinic_id]
                if clinic_id is not None
                else (
                    await connection.scalars(
                        select(AuditHead.tenant_id).order_by(AuditHead.tenant_id)
                    )
                ).all()
            )
            return [await verify(connection, clinic) for clinic in clinics]
    finally:
        await engine.dispose()


def printable(verdicts: list[Verdict]) -> str:
    lines = []
    for verdict in verdicts:
        if verdict.broken is None:
            lines.append(f"clinic {verdict.clinic_id}: {verdict.events} events, intact")
        else:
            lines.append(
                f"clinic {verdict.clinic_id}: BROKEN at event {verdict.broken.seq}:"
                f" {verdict.broken.reason}"
            )
    return "\n".join(lines) if lines else "no clinic has an audit trail yet"


def _stored(row: RowMapping) -> Stored:
    values = {name: row["created_at" if name == "occurred_at" else name] for name in _ENTRY}
    values["fields"] = tuple(values["fields"])
    return Stored(Entry(**values), row["prev_hash"], row["hash"])
