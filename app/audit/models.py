"""The audit trail's tables (migration 0011, ADR 0027): each clinic's events in a hash chain,
and the chain's head.

Neither table refers to ``clinics``: what was done in a clinic is kept for longer than the
clinic's own data (issue 20's retention), so deleting a clinic must leave its trail.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

from sqlalchemy import ARRAY, BigInteger, Index, LargeBinary, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped
from app.kit.ids import new_id

HASH_BYTES = 32
GENESIS_SQL = text("'\\x" + "00" * HASH_BYTES + "'::bytea")
"""The chain's GENESIS (app/audit/chain.py) as PostgreSQL writes it."""


class AuditEvent(TenantScoped, Base):
    """One thing done in a clinic: who, what, to which object, when (``created_at``), from
    where, and the link of the clinic's chain it makes (``hash`` over ``prev_hash`` and the
    event, :mod:`app.audit.chain`). Written once, in the transaction of what it records; the
    service may insert and read these rows, never change or delete them."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq"),
        Index("ix_audit_events_object", "tenant_id", "object_id", "seq"),
        Index("ix_audit_events_user", "tenant_id", "user_id", "seq"),
        Index("ix_audit_events_time", "tenant_id", "created_at", "seq"),
    )
    audited: ClassVar[bool] = False

    tenant_id: Mapped[uuid.UUID] = mapped_column(nullable=False, sort_order=-9)
    seq: Mapped[int] = mapped_column(BigInteger)
    """The event's place in its clinic's chain: 1, 2, 3... with no gaps."""
    user_id: Mapped[uuid.UUID | None]
    credential_id: Mapped[uuid.UUID | None]
    role: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(100))
    """What was done, in the permission table's words (``pets:write``), or ``job:<task>`` for
    a job's work, or ``system`` for an operator's command or the service's own."""
    object_type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[uuid.UUID | None]
    change: Mapped[str] = mapped_column(String(20))
    """``insert``, ``update``, ``delete``, ``read`` (clinical data opened), or ``security`` (a
    log-in, a refusal, a token made...: :mod:`app.audit.security`)."""
    fields: Mapped[list[str]] = mapped_column(ARRAY(String(100)))
    """The names of the columns written (never their values)."""
    client_ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    event: Mapped[str | None] = mapped_column(String(40))
    """A security event's name (``login_succeeded``, ``permission_denied``...), else None."""
    outcome: Mapped[str | None] = mapped_column(String(40))
    """What came of a security event (``succeeded``, ``refused``, ``locked``...), else None."""
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_BYTES))
    hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_BYTES))

    @property
    def occurred_at(self) -> dt.datetime:
        return self.created_at


class AuditHead(TenantScoped, Base):
    """The last link of a clinic's chain: appending an event locks this row, so one clinic's
    events are chained one transaction at a time and never fork."""

    __tablename__ = "audit_heads"
    __table_args__ = (UniqueConstraint("tenant_id"),)
    audited: ClassVar[bool] = False

    tenant_id: Mapped[uuid.UUID] = mapped_column(nullable=False, sort_order=-9)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_BYTES))
    base_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The last event pruned by retention (migration 0015; 0: none): the chain starts after it."""
    base_hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_BYTES), server_default=GENESIS_SQL)
    """That event's hash, which the first event kept links to (GENESIS: none pruned)."""


class AuditAnchor(Base):
    """A clinic's trail head as ``vetify audit anchor`` found it, signed with a key the service
    never holds (migration 0013): the trail must still hold event ``seq`` with ``hash``.
    Written by the schema's owner, read by the backup role; append-only."""

    __tablename__ = "audit_anchors"

    clinic_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_BYTES))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    anchored_at: Mapped[dt.datetime]


class SecurityEventRecord(Base):
    """A security event that concerns no clinic (migration 0014): a log-in refused for an
    address, an account locked, a webhook's signature refused... Those of a clinic are events of
    its trail instead (``change = 'security'``). The service may only insert these rows, not
    read them (a clinic's session must not learn of other accounts); operators read them as the
    backup role (``vetify audit security-events``). Append-only, like the trail."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_time", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    event: Mapped[str] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[uuid.UUID | None]
    credential_id: Mapped[uuid.UUID | None]
    action: Mapped[str | None] = mapped_column(String(100))
    client_ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, object]] = mapped_column(JSONB)
    """What else the event named: ids, counts, a policy's name (never personal data)."""
