"""Reading the audit trail back: a clinic's events searched (``GET /api/v1/audit-events``) and
its chain checked end to end (``vetify audit verify``)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, fields

from sqlalchemy import RowMapping, Select, false, make_url, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine

from app.audit.chain import Break, Checker, Entry, Stored
from app.audit.models import AuditEvent, AuditHead
from app.audit.trail import EVENTS, Change
from app.db.repository import of_clinic
from app.db.tenancy import Tenant

BATCH = 5_000
"""Events read at a time: a clinic's years of events are checked in bounded memory."""
_ENTRY = [field.name for field in fields(Entry)]


async def search(
    session: AsyncSession,
    tenant: Tenant,
    *,
    user_id: uuid.UUID | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: uuid.UUID | None = None,
    change: Change | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Select[AuditEvent]:
    """The clinic's events matching every filter given (``since`` inclusive, ``until`` not)."""
    query = of_clinic(tenant, AuditEvent)
    for column, value in (
        (AuditEvent.user_id, user_id),
        (AuditEvent.action, action),
        (AuditEvent.object_type, object_type),
        (AuditEvent.object_id, object_id),
        (AuditEvent.change, change),
    ):
        if value is not None:
            query = query.where(column == value)
    # A time bound becomes a bound on ``seq``, read first on the time index: an event's time is
    # taken under its clinic's head lock, so it rises with ``seq``. The page then reads the
    # ``seq`` index from there; given as a subquery instead, the bound's value was unknown to
    # the planner, which sorted the clinic's events for a page (tests/load/test_plans.py).
    if since is not None:
        first = await session.scalar(_first_at(tenant, since))
        query = query.where(AuditEvent.seq >= first if first is not None else false())
    if until is not None:
        first = await session.scalar(_first_at(tenant, until))
        if first is not None:
            query = query.where(AuditEvent.seq < first)
    return query


async def last_seq(session: AsyncSession, tenant: Tenant) -> int:
    """The ``seq`` of the clinic's last event (its head's), 0 before it has one."""
    seq = await session.scalar(of_clinic(tenant, AuditHead).with_only_columns(AuditHead.seq))
    return seq or 0


def _first_at(tenant: Tenant, moment: dt.datetime) -> Select[int]:
    """The ``seq`` of the clinic's first event at or after ``moment``."""
    return (
        of_clinic(tenant, AuditEvent)
        .with_only_columns(AuditEvent.seq)
        .where(AuditEvent.created_at >= moment)
        .order_by(AuditEvent.created_at, AuditEvent.seq)
        .limit(1)
    )


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
