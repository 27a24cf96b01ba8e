from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk, tenant_key


class Channel(StrEnum):
    email = "email"
    whatsapp = "whatsapp"
    sms = "sms"


class Customer(TenantScoped, Base):
    """A pet owner."""

    __tablename__ = "customers"
    __table_args__ = (tenant_key(),)

    first_name: Mapped[str] = mapped_column(String(200))
    last_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    phone: Mapped[str | None] = mapped_column(String(16))
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    postcode: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))
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
