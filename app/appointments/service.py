"""The appointment book. Double bookings are refused by the database's exclusion constraints."""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo

from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.appointments.models import Appointment, AppointmentType, Status
from app.appointments.rules import RESCHEDULABLE, can_transition
from app.appointments.schemas import (
    AppointmentIn,
    AppointmentOut,
    AppointmentPatch,
    AppointmentTypeIn,
    AppointmentTypePatch,
)
from app.auth.models import Membership
from app.clinics.models import Room
from app.db.repository import apply, constraint_of, get_or_404, of_clinic, referenced
from app.db.tenancy import Tenant, check_tenant
from app.kit.clock import utcnow
from app.kit.problems import Conflict, FieldError, InvalidInput
from app.pets.models import Pet

_CONFLICTS = {
    "no_vet_double_booking": "The vet already has an appointment at that time.",
    "no_room_double_booking": "The room is already booked at that time.",
}
DEFAULT_DURATION = dt.timedelta(minutes=15)


class BookingConflict(Conflict):
    slug, title = "booking-conflict", "Double booking"


def search(
    tenant: Tenant,
    *,
    day: dt.date | None,
    timezone: str,
    vet_id: uuid.UUID | None,
    status: Status | None,
    pet_id: uuid.UUID | None,
    room_id: uuid.UUID | None,
) -> Select[Appointment]:
    query = of_clinic(tenant, Appointment)
    if day is not None:
        start = dt.datetime.combine(day, dt.time(), zoneinfo.ZoneInfo(timezone))
        query = query.where(
            Appointment.starts_at >= start, Appointment.starts_at < start + dt.timedelta(days=1)
        )
    for column, value in (
        (Appointment.vet_id, vet_id),
        (Appointment.status, status),
        (Appointment.pet_id, pet_id),
        (Appointment.room_id, room_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        message = _CONFLICTS.get(constraint_of(exc) or "")
        if message:
            raise BookingConflict(message) from exc
        raise


async def _check_vet(session: AsyncSession, tenant: Tenant, vet_id: uuid.UUID) -> None:
    vet = of_clinic(tenant, Membership).where(Membership.user_id == vet_id, Membership.active)
    membership = (await session.scalars(vet)).one_or_none()
    if membership is None:
        raise InvalidInput(
            "The vet is not an active member of this clinic.",
            [
                FieldError(
                    loc=["body", "vet_id"],
                    msg="no active staff member with this id",
                    type="not_found",
                )
            ],
        )


def _check_horizon(sent: dict[str, dt.datetime], horizon: dt.timedelta) -> None:
    """Each time sent is within ``horizon`` of now, before or after."""
    now = utcnow()
    errors = [
        FieldError(
            loc=["body", name],
            msg=f"must be within {horizon.days} days of now, before or after",
            type="value_error",
        )
        for name, at in sent.items()
        if not now - horizon <= at <= now + horizon
    ]
    if errors:
        raise InvalidInput(
            f"Appointments are booked within {horizon.days} days of today, before or after.",
            errors,
        )


def _check_period(starts_at: dt.datetime, ends_at: dt.datetime) -> None:
    if ends_at <= starts_at:
        raise InvalidInput(
            "An appointment must end after it starts.",
            [
                FieldError(
                    loc=["body", "ends_at"], msg="must be after starts_at", type="value_error"
                )
            ],
        )


async def create(
    session: AsyncSession, tenant: Tenant, data: AppointmentIn, horizon: dt.timedelta
) -> Appointment:
    sent = data.model_dump(include={"starts_at", "ends_at"}, exclude_none=True)
    _check_horizon(sent, horizon)
    await referenced(session, tenant, Pet, data.pet_id, "pet_id", "pet")
    await _check_vet(session, tenant, data.vet_id)
    if data.room_id is not None:
        await referenced(session, tenant, Room, data.room_id, "room_id", "room")
    kind = None
    if data.appointment_type_id is not None:
        kind = await referenced(
            session,
            tenant,
            AppointmentType,
            data.appointment_type_id,
            "appointment_type_id",
            "appointment type",
        )
    duration = dt.timedelta(minutes=kind.default_duration_minutes) if kind else DEFAULT_DURATION
    ends_at = data.ends_at or data.starts_at + duration
    _check_period(data.starts_at, ends_at)
    appointment = Appointment(
        tenant_id=tenant.clinic_id, **data.model_dump(exclude={"ends_at"}), ends_at=ends_at
    )
    session.add(appointment)
    await _flush(session)
    return appointment


async def update(
    session: AsyncSession,
    tenant: Tenant,
    appointment_id: uuid.UUID,
    changes: AppointmentPatch,
    horizon: dt.timedelta,
) -> Appointment:
    fields = changes.model_fields_set
    # Only the times sent: a stored one outside today's horizon may stay as it is.
    _check_horizon(changes.model_dump(include={"starts_at", "ends_at"} & fields), horizon)
    appointment = await get_or_404(session, tenant, Appointment, appointment_id, "appointment")
    if appointment.status not in RESCHEDULABLE:
        raise Conflict(f"An appointment that is {appointment.status} cannot be changed.")
    if "vet_id" in fields:
        await _check_vet(session, tenant, changes.vet_id)
    if "room_id" in fields and changes.room_id is not None:
        await referenced(session, tenant, Room, changes.room_id, "room_id", "room")
    _check_period(
        changes.starts_at if "starts_at" in fields else appointment.starts_at,
        changes.ends_at if "ends_at" in fields else appointment.ends_at,
    )
    apply(appointment, changes)
    await _flush(session)
    return appointment


async def transition(
    session: AsyncSession, tenant: Tenant, appointment_id: uuid.UUID, target: Status
) -> Appointment:
    appointment = await get_or_404(session, tenant, Appointment, appointment_id, "appointment")
    if not can_transition(appointment.status, target):
        raise Conflict(f"An appointment cannot go from {appointment.status} to {target}.")
    appointment.status = target
    await session.flush()
    return appointment


def types(tenant: Tenant) -> Select[AppointmentType]:
    return of_clinic(tenant, AppointmentType)


async def create_type(
    session: AsyncSession, tenant: Tenant, data: AppointmentTypeIn
) -> AppointmentType:
    kind = AppointmentType(tenant_id=check_tenant(session, tenant), **data.model_dump())
    session.add(kind)
    await session.flush()
    return kind


async def update_type(
    session: AsyncSession, tenant: Tenant, type_id: uuid.UUID, changes: AppointmentTypePatch
) -> AppointmentType:
    kind = await get_or_404(session, tenant, AppointmentType, type_id, "appointment type")
    apply(kind, changes)
    await session.flush()
    return kind


def to_out(appointment: Appointment) -> AppointmentOut:
    return AppointmentOut.model_validate(appointment)
