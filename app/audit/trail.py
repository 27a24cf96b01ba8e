"""The audit trail's writer (ADR 0027): every change the ORM makes to an audited row becomes an
event of its clinic's chain, in the same transaction.

* After each flush, what it inserted, updated or deleted is noted on the session (the object,
  the names of the columns written, and who and where from, out of the request's or job's
  :class:`~app.kit.context.Context`).
* A read of clinical data is noted by the route that serves it (:func:`read`), and so is an
  export of the trail itself (:func:`exported`).
* Before the transaction commits, the notes become rows of ``audit_events``, chained after
  the clinic's head (``audit_heads``, locked until the commit). So a change commits with its
  events or not at all, and an event is never written for a change that was rolled back
  (a rolled-back savepoint takes its notes with it).

A model is audited unless it says ``audited = False`` (with its reason): a new table is in the
trail without anyone remembering it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import event, insert, inspect, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from app.audit.chain import GENESIS, Entry, link
from app.audit.models import AuditEvent
from app.db.base import TENANTS, Base, TenantScoped
from app.kit import clock, context
from app.kit.ids import new_id

NOTES = "vetify_audit_notes"
UNWRITTEN = frozenset({"id", "tenant_id", "created_at", "updated_at"})
"""Columns every row has, kept by the database: not part of what a change wrote."""

Change = Literal["insert", "update", "delete", "read", "security"]
EVENTS = Base.metadata.tables[AuditEvent.__tablename__]


@dataclasses.dataclass(frozen=True, slots=True)
class Note:
    tenant_id: uuid.UUID
    object_type: str
    object_id: uuid.UUID | None
    change: Change
    fields: tuple[str, ...]
    who: dict[str, Any]
    event: str | None = None
    outcome: str | None = None


def audited(instance: object) -> bool:
    return bool(getattr(instance, "audited", True)) and _tenant_of(instance) is not None


def _tenant_of(instance: object) -> uuid.UUID | None:
    """The clinic a row belongs to: its ``tenant_id``, or for the clinic itself its ``id``."""
    if isinstance(instance, TenantScoped):
        return instance.tenant_id
    if getattr(instance, "__tablename__", None) == TENANTS:
        clinic_id: uuid.UUID = instance.id  # type: ignore[attr-defined]
        return clinic_id
    return None


def _written(instance: object, change: Change) -> tuple[str, ...]:
    state = inspect(instance)
    columns = [a for a in state.mapper.column_attrs if a.key not in UNWRITTEN]
    if change == "insert":  # what the row was given (read without loading anything)
        names = [a.key for a in columns if state.dict.get(a.key) is not None]
    elif change == "update":
        names = [a.key for a in columns if state.attrs[a.key].history.has_changes()]
    else:
        names = []
    return tuple(sorted(names))


def who() -> dict[str, Any]:
    """The actor and origin of the work under way (none for an operator's command)."""
    under_way = context.current()
    if under_way is None:
        return {"action": "system"}
    job = f"job:{under_way.task}" if under_way.task is not None else None
    return {
        "action": job or under_way.action or "system",
        "user_id": under_way.user_id,
        "credential_id": under_way.credential_id,
        "role": under_way.role,
        "client_ip": under_way.client_ip,
        "user_agent": under_way.user_agent,
        "request_id": under_way.request_id,
        "job_id": under_way.job_id,
    }


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _flush: Any) -> None:
    actor = who()
    changes: list[tuple[Change, Iterable[object]]] = [
        ("insert", session.new),
        ("update", [i for i in session.dirty if session.is_modified(i)]),
        ("delete", session.deleted),
    ]
    for change, instances in changes:
        for instance in instances:
            if not audited(instance):
                continue
            fields = _written(instance, change)
            if change != "update" or fields:
                _note(session, *_subject(instance), change, fields, actor)


def read(session: AsyncSession, instance: object) -> None:
    """Note that the caller read ``instance`` (clinical data opened: a medical record, an
    attachment's file), to be written with the request's transaction like a change."""
    _note(session.sync_session, *_subject(instance), "read", (), who())


def exported(session: AsyncSession, clinic_id: uuid.UUID) -> None:
    """Note that the caller took the clinic's trail away (its export): a ``read`` of
    ``audit_events`` as a whole, of no one event (no object id)."""
    _note(session.sync_session, clinic_id, EVENTS.name, None, "read", (), who())


def _subject(instance: object) -> tuple[uuid.UUID | None, str, uuid.UUID | None]:
    """The clinic, the table and the id of the row ``instance``."""
    object_type = getattr(instance, "__tablename__", type(instance).__name__)
    return _tenant_of(instance), object_type, getattr(instance, "id", None)


def _note(
    session: Session,
    tenant_id: uuid.UUID | None,
    object_type: str,
    object_id: uuid.UUID | None,
    change: Change,
    fields: tuple[str, ...],
    who: dict[str, Any],
) -> None:
    scope = session.get_nested_transaction() or session.get_transaction()
    if scope is None or tenant_id is None:
        raise RuntimeError("the trail notes a clinic's row, in a transaction")
    note = Note(
        tenant_id=tenant_id,
        object_type=object_type,
        object_id=object_id,
        change=change,
        fields=fields,
        who=who,
    )
    session.info.setdefault(NOTES, []).append((scope, note))


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous: SessionTransaction) -> None:
    noted: list[tuple[SessionTransaction, Note]] | None = session.info.get(NOTES)
    if not noted:
        return
    if previous.parent is None:
        session.info.pop(NOTES, None)
        return
    noted[:] = [(scope, note) for scope, note in noted if not _within(scope, previous)]


def _within(scope: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while scope is not None:
        if scope is ended:
            return True
        scope = scope.parent
    return False


@event.listens_for(Session, "before_commit")
def _write_notes(session: Session) -> None:
    session.flush()  # the commit's own flush comes after this hook: its changes too
    noted: list[tuple[SessionTransaction, Note]] = session.info.pop(NOTES, [])
    by_clinic: dict[uuid.UUID, list[Note]] = {}
    for _, note in noted:
        by_clinic.setdefault(note.tenant_id, []).append(note)
    for tenant_id, notes in by_clinic.items():
        append(session, tenant_id, notes)


def append(session: Session, tenant_id: uuid.UUID, notes: list[Note]) -> None:
    """``notes`` as the next events of ``tenant_id``'s chain, in this transaction."""
    head = session.execute(
        text(
            "INSERT INTO audit_heads (id, tenant_id, seq, hash) VALUES (:id, :tenant, 0, :genesis)"
            " ON CONFLICT (tenant_id) DO UPDATE SET seq = audit_heads.seq"
            " RETURNING seq, hash"
        ),
        {"id": new_id(), "tenant": tenant_id, "genesis": GENESIS},
    ).one()
    seq, prev = head.seq, head.hash
    now = clock.utcnow()
    rows = []
    for note in notes:
        seq += 1
        entry = Entry(
            tenant_id=tenant_id,
            seq=seq,
            occurred_at=now,
            user_id=note.who.get("user_id"),
            credential_id=note.who.get("credential_id"),
            role=note.who.get("role"),
            action=note.who["action"],
            object_type=note.object_type,
            object_id=note.object_id,
            change=note.change,
            fields=note.fields,
            client_ip=note.who.get("client_ip"),
            user_agent=note.who.get("user_agent"),
            request_id=note.who.get("request_id"),
            job_id=note.who.get("job_id"),
            event=note.event,
            outcome=note.outcome,
        )
        digest = link(prev, entry)
        values = dataclasses.asdict(entry)
        values["fields"] = list(entry.fields)
        values["created_at"] = values.pop("occurred_at")
        rows.append({**values, "id": new_id(), "prev_hash": prev, "hash": digest})
        prev = digest
    # Core statements on the tables: the ORM's tenant filter has no part in them (a session of
    # no clinic would update no head); the database's wall does.
    session.execute(insert(EVENTS).values(rows))
    session.execute(
        text("UPDATE audit_heads SET seq = :seq, hash = :hash WHERE tenant_id = :tenant"),
        {"seq": seq, "hash": prev, "tenant": tenant_id},
    )
