from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk, tenant_key


class Channel(StrEnum):
    email = "email"
    whatsapp = "whatsapp"
    sms = "sms"


class Customer(TenantScoped, Base):
    """A pet owner."""

    __tablename__ = "customers"
    __table_args__ = (
        tenant_key(),
        Index("ix_customers_email_index", "tenant_id", "email_index"),
        Index("ix_customers_phone_index", "tenant_id", "phone_index"),
    )

    first_name: Mapped[str] = mapped_column(String(200))
    last_name: Mapped[str] = mapped_column(String(200))
    contact_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Email, phone and postal address (:class:`~app.customers.schemas.Contact`), sealed with
    the clinic's data key and bound to this row (ADR 0032); None when none was given. Names stay
    in the clear: the clinic searches them by any part."""
    email_index: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The email address's blind index (app/keys/blind.py): found by the whole address."""
    phone_index: Mapped[bytes | None] = mapped_column(LargeBinary)
    preferred_language: Mapped[str] = mapped_column(String(5), default="en")
    erased_at: Mapped[dt.datetime | None]
    """When the client's personal fields were erased (app/privacy): the row stays, anonymised,
    for the pets and clinical records the clinic keeps."""
    legal_hold: Mapped[str | None] = mapped_column(String(500))
    """Why the clinic must keep the client's data for now; erasure is refused while set."""


class ConsentEvent(TenantScoped, Base):
    """Append-only history of consent per channel; the newest event per channel is in force."""

    __tablename__ = "consent_events"
    __table_args__ = (tenant_fk("customer_id", "customers", ondelete="CASCADE"),)

    customer_id: Mapped[uuid.UUID] = mapped_column(index=True)
    channel: Mapped[Channel] = mapped_column(pg_enum(Channel, "consent_channel"))
    granted: Mapped[bool]
    recorded_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
