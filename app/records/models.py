from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, LargeBinary, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, TenantScoped, tenant_fk, tenant_key


class MedicalRecord(TenantScoped, Base):
    """A visit note in SOAP form with vitals, vaccinations and prescriptions.

    Signed by a vet; from ``locks_at`` (24 h after signing) it cannot change, in the service
    and in the database (trigger ``medical_records_locked``); addenda amend it instead.
    """

    __tablename__ = "medical_records"
    __table_args__ = (
        tenant_key(),
        tenant_fk("pet_id", "pets"),
        tenant_fk("appointment_id", "appointments"),
    )

    pet_id: Mapped[uuid.UUID] = mapped_column(index=True)
    appointment_id: Mapped[uuid.UUID | None]
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    visited_at: Mapped[dt.datetime]
    notes_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The SOAP notes (:class:`~app.records.schemas.Notes`: subjective, objective, assessment,
    plan), sealed with the clinic's data key and bound to this row (ADR 0033); None when all
    four are empty."""
    weight_kg: Mapped[Decimal | None] = mapped_column(Numeric(7, 3))
    temperature_c: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    heart_rate_bpm: Mapped[int | None]
    respiratory_rate_bpm: Mapped[int | None]
    signed_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    signed_at: Mapped[dt.datetime | None]
    locks_at: Mapped[dt.datetime | None]

    vaccinations: Mapped[list[Vaccination]] = relationship(
        order_by="Vaccination.id", cascade="all, delete-orphan", lazy="selectin"
    )
    prescriptions: Mapped[list[Prescription]] = relationship(
        order_by="Prescription.id", cascade="all, delete-orphan", lazy="selectin"
    )
    addenda: Mapped[list[Addendum]] = relationship(order_by="Addendum.id", lazy="selectin")


class Vaccination(TenantScoped, Base):
    __tablename__ = "vaccinations"
    __table_args__ = (tenant_fk("record_id", "medical_records", ondelete="CASCADE"),)

    record_id: Mapped[uuid.UUID] = mapped_column(index=True)
    vaccine: Mapped[str] = mapped_column(String(200))
    lot: Mapped[str | None] = mapped_column(String(100))
    expiry_date: Mapped[dt.date | None]
    given_at: Mapped[dt.datetime]
    next_due: Mapped[dt.date | None]


class Prescription(TenantScoped, Base):
    __tablename__ = "prescriptions"
    __table_args__ = (tenant_fk("record_id", "medical_records", ondelete="CASCADE"),)

    record_id: Mapped[uuid.UUID] = mapped_column(index=True)
    drug: Mapped[str] = mapped_column(String(200))
    dose: Mapped[str] = mapped_column(String(100))
    frequency: Mapped[str] = mapped_column(String(100))
    duration_days: Mapped[int | None]
    instructions: Mapped[str | None] = mapped_column(String(2000))


class Addendum(TenantScoped, Base):
    """Append-only amendment of a record (the service's role may only INSERT and SELECT)."""

    __tablename__ = "record_addenda"
    __table_args__ = (tenant_fk("record_id", "medical_records"),)

    record_id: Mapped[uuid.UUID] = mapped_column(index=True)
    author_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    text_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """The amendment's text, sealed with the clinic's data key and bound to this row."""
