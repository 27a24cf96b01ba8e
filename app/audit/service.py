"""Reading the audit trail back: a clinic's events searched (``GET /api/v1/audit-events``) and
its chain checked end to end (``vetify audit verify``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import RowMapping, Select, false, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.audit import anchors
from app.audit.anchors import Anchor
from app.audit.chain import GENESIS, Break, Checker, Entry, Stored
from app.audit.models import AuditEvent, AuditHead
from app.audit.trail import EVENTS, Change
from app.db.repository import of_clinic
from app.db.session import role_engine
from app.db.tenancy import Tenant
from app.kit.clock import utcnow

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
    anchored: int = 0
    """The last event an anchor held (0: none)."""
    pruned: int = 0
    """The last event pruned by retention (0: none): the chain was checked after it."""


async def verify(
    connection: AsyncConnection,
    clinic_id: uuid.UUID,
    public: Ed25519PublicKey | None = None,
    outside: Sequence[Anchor] = (),
    retention: dt.timedelta | None = None,
) -> Verdict:
    """Recompute ``clinic_id``'s chain from its first event (after those pruned by retention)
    to its head, and hold it to its anchors: those in the database and ``outside`` ones (kept
    elsewhere), each signed by ``public``'s private half (not checked without it); an anchor
    of a pruned event is not held. A pruned chain's start must be an event an anchor signed
    longer than ``retention`` ago (:func:`_unheld_start`). ``connection`` must see every row of
    the clinic: the backup role's."""
    held = await anchors.stored(connection, clinic_id)
    held += [anchor for anchor in outside if anchor.clinic_id == clinic_id]
    held.sort(key=lambda anchor: anchor.seq)
    for anchor in held:
        if public is not None and not anchors.genuine(public, anchor):
            return Verdict(clinic_id, 0, Break(anchor.seq, f"{_said(anchor)} is not signed"))
    head = (
        await connection.execute(
            select(AuditHead.seq, AuditHead.hash, AuditHead.base_seq, AuditHead.base_hash).where(
                AuditHead.tenant_id == clinic_id
            )
        )
    ).one_or_none()
    base = (head.base_seq, head.base_hash) if head else (0, GENESIS)
    moved = _unheld_start(held, base, retention)
    if moved is not None:
        return Verdict(clinic_id, 0, moved, pruned=base[0])
    pending = deque(anchor for anchor in held if anchor.seq > base[0])
    checker, counted, after = Checker(*base), 0, base[0]
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
            event = _stored(row)
            broken = checker.feed(event) or _against(pending, event)
            if broken is not None:
                return Verdict(clinic_id, counted, broken)
            counted += 1
        if len(rows) < BATCH:
            break
        after = rows[-1]["seq"]
    broken = checker.end((head.seq, head.hash) if head else None)
    if broken is None and pending:
        broken = Break(
            pending[0].seq,
            f"{_said(pending[0])}, but the trail ends at event {base[0] + counted}: cut short",
        )
    return Verdict(clinic_id, counted, broken, held[-1].seq if held else 0, base[0])


def _unheld_start(
    held: Sequence[Anchor], base: tuple[int, bytes], retention: dt.timedelta | None
) -> Break | None:
    """Where a pruned chain's start was moved by other than retention: ``vetify audit prune``
    moves it only onto an event an anchor signed before the cutoff (the anchor's time bounds the
    event's), so the start must be held by an anchor of that event, signed longer than
    ``retention`` ago. Otherwise whoever may move it (the schema's owner) could move it to the
    head and delete the trail, which the chain alone would find intact."""
    seq, start = base
    if seq == 0:
        return None
    holding = [anchor for anchor in held if anchor.seq == seq]
    if not holding:
        return Break(seq, f"the chain starts after event {seq}, which no anchor holds: moved")
    signed = [anchor for anchor in holding if anchor.hash == start]
    if not signed:
        return Break(seq, f"{_said(holding[0])}, another: the chain's start was moved")
    oldest = min(signed, key=lambda anchor: anchor.anchored_at)
    if retention is not None and oldest.anchored_at > utcnow() - retention:
        return Break(
            seq,
            f"the chain starts after event {seq}, anchored within the retention"
            f" ({retention.days} days): events were removed that it keeps",
        )
    return None


def _said(anchor: Anchor) -> str:
    return f"the anchor of {anchor.anchored_at:%Y-%m-%d %H:%M:%S} UTC holds event {anchor.seq}"


def _against(pending: deque[Anchor], event: Stored) -> Break | None:
    """The anchors of this event (the chain has checked every one before it): it must be the
    event they signed."""
    while pending and pending[0].seq == event.entry.seq:
        anchor = pending.popleft()
        if anchor.hash != event.hash:
            return Break(anchor.seq, f"{_said(anchor)}, another: the trail was rewritten")
    return None


async def verify_trails(
    url: str,
    clinic_id: uuid.UUID | None = None,
    public: Ed25519PublicKey | None = None,
    outside: Sequence[Anchor] = (),
    retention: dt.timedelta | None = None,
) -> list[Verdict]:
    """Every clinic's chain (or ``clinic_id``'s), read with ``url``: the backup role's, which
    sees every clinic (any driver named in it is asyncpg's); held to the anchors and a pruned
    chain's start to the ``retention`` (:func:`verify`). A clinic an outside anchor names is
    checked even if its head is gone."""
    engine = role_engine(url)
    try:
        async with engine.connect() as connection:
            clinics = (
                {clinic_id}
                if clinic_id is not None
                else {
                    *await connection.scalars(select(AuditHead.tenant_id)),
                    *(anchor.clinic_id for anchor in outside),
                }
            )
            return [
                await verify(connection, clinic, public, outside, retention)
                for clinic in sorted(clinics)
            ]
    finally:
        await engine.dispose()


def printable(verdicts: list[Verdict]) -> str:
    lines = []
    for verdict in verdicts:
        if verdict.broken is None:
            anchored = f", anchored to event {verdict.anchored}" if verdict.anchored else ""
            pruned = f" (events 1 to {verdict.pruned} pruned)" if verdict.pruned else ""
            lines.append(
                f"clinic {verdict.clinic_id}: {verdict.events} events{pruned}, intact{anchored}"
            )
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
