from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKeyConstraint,
    Index,
    String,
    Text,
    func,
    literal_column,
)
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk, tenant_key


class Status(StrEnum):
    scheduled = "scheduled"
    confirmed = "confirmed"
    checked_in = "checked_in"
    in_exam = "in_exam"
    completed = "completed"
    cancelled = "cancelled"
    no_show = "no_show"


INACTIVE = (Status.cancelled, Status.no_show)
"""Statuses that free the slot: they take no part in the double-booking constraints."""

_ACTIVE_SQL = "status NOT IN ('cancelled', 'no_show')"
_PERIOD = func.tstzrange(literal_column("starts_at"), literal_column("ends_at"), "[)")


class AppointmentType(TenantScoped, Base):
    __tablename__ = "appointment_types"
    __table_args__ = (tenant_key(),)

    name: Mapped[str] = mapped_column(String(100))
    default_duration_minutes: Mapped[int]


class Appointment(TenantScoped, Base):
    __tablename__ = "appointments"
    __table_args__ = (
        tenant_key(),
        tenant_fk("pet_id", "pets"),
        tenant_fk("room_id", "rooms"),
        tenant_fk("appointment_type_id", "appointment_types"),
        # The vet must be a member of this clinic.
        ForeignKeyConstraint(
            ["tenant_id", "vet_id"], ["memberships.tenant_id", "memberships.user_id"]
        ),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        # The book in its order per clinic: whole, a vet's, a room's (migration 0009,
        # docs/indexes.md).
        Index("ix_appointments_tenant_id_starts_at_id", "tenant_id", "starts_at", "id"),
        Index(
            "ix_appointments_tenant_id_vet_id_starts_at_id",
            "tenant_id",
            "vet_id",
            "starts_at",
            "id",
        ),
        Index(
            "ix_appointments_tenant_id_room_id_starts_at_id",
            "tenant_id",
            "room_id",
            "starts_at",
            "id",
        ),
        # The database, not a read-then-write check, decides double bookings: two concurrent
        # requests cannot both pass an exclusion constraint.
        ExcludeConstraint(
            (literal_column("tenant_id"), "="),
            (literal_column("vet_id"), "="),
            (_PERIOD, "&&"),
            name="no_vet_double_booking",
            using="gist",
            where=_ACTIVE_SQL,
        ),
        ExcludeConstraint(
            (literal_column("tenant_id"), "="),
            (literal_column("room_id"), "="),
            (_PERIOD, "&&"),
            name="no_room_double_booking",
            using="gist",
            where=f"room_id IS NOT NULL AND {_ACTIVE_SQL}",
        ),
    )

    pet_id: Mapped[uuid.UUID] = mapped_column(index=True)
    vet_id: Mapped[uuid.UUID]
    room_id: Mapped[uuid.UUID | None]
    appointment_type_id: Mapped[uuid.UUID | None]
    starts_at: Mapped[dt.datetime]
    ends_at: Mapped[dt.datetime]
    status: Mapped[Status] = mapped_column(
        pg_enum(Status, "appointment_status"), default=Status.scheduled
    )
    reason: Mapped[str | None] = mapped_column(String(500))
    notes: Mapped[str | None] = mapped_column(Text)
