from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.appointments import service
from app.appointments.models import Appointment, AppointmentType, Status
from app.appointments.schemas import (
    AppointmentIn,
    AppointmentOut,
    AppointmentPatch,
    AppointmentTypeIn,
    AppointmentTypeOut,
    AppointmentTypePatch,
    StatusIn,
)
from app.auth.deps import AppSettings, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.clinics import service as clinics
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, page
from app.kit.problems import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, responses
from app.kit.types import Date

router = APIRouter(prefix="/api/v1", tags=["appointments"])
Reader = Annotated[Principal, Depends(requires(Action.appointments_read))]
Writer = Annotated[Principal, Depends(requires(Action.appointments_write))]
Manager = Annotated[Principal, Depends(requires(Action.clinic_manage))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)
BOOK = responses(Unauthenticated, Forbidden, service.BookingConflict, InvalidInput)
CHANGE = responses(
    Unauthenticated, Forbidden, NotFound, Conflict, service.BookingConflict, InvalidInput
)


@router.get(
    "/appointments",
    responses=READ,
    summary="The appointment book, by day, vet, status, pet or room",
)
async def list_appointments(
    caller: Reader,
    session: DbSession,
    day: Annotated[Date | None, Query(description="A day in the clinic's time zone")] = None,
    vet_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    pet_id: Annotated[uuid.UUID | None, Query()] = None,
    room_id: Annotated[uuid.UUID | None, Query()] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[AppointmentOut]:
    timezone = await clinics.timezone_of(session, caller) if day else "UTC"
    query = service.search(
        caller,
        day=day,
        timezone=timezone,
        vet_id=vet_id,
        status=status,
        pet_id=pet_id,
        room_id=room_id,
    )
    return await page(
        session,
        query,
        AppointmentOut,
        cursor,
        limit,
        order_by=[Appointment.starts_at, Appointment.id],
    )


@router.post(
    "/appointments",
    status_code=status.HTTP_201_CREATED,
    responses=BOOK,
    summary="Book an appointment",
)
async def create_appointment(
    body: AppointmentIn, caller: Writer, session: DbSession, settings: AppSettings
) -> AppointmentOut:
    booked = await service.create(session, caller, body, settings.appointment_horizon)
    return service.to_out(booked)


@router.get("/appointments/{appointment_id}", responses=ONE, summary="One appointment")
async def get_appointment(
    appointment_id: uuid.UUID, caller: Reader, session: DbSession
) -> AppointmentOut:
    return service.to_out(
        await get_or_404(session, caller, Appointment, appointment_id, "appointment")
    )


@router.patch("/appointments/{appointment_id}", responses=CHANGE, summary="Reschedule or reassign")
async def update_appointment(
    appointment_id: uuid.UUID,
    body: AppointmentPatch,
    caller: Writer,
    session: DbSession,
    settings: AppSettings,
) -> AppointmentOut:
    return service.to_out(
        await service.update(session, caller, appointment_id, body, settings.appointment_horizon)
    )


@router.post(
    "/appointments/{appointment_id}/status",
    responses=responses(Unauthenticated, Forbidden, NotFound, Conflict, InvalidInput),
    summary="Move along the status flow (confirm, check in, ... cancel, no-show)",
)
async def change_status(
    appointment_id: uuid.UUID, body: StatusIn, caller: Writer, session: DbSession
) -> AppointmentOut:
    return service.to_out(await service.transition(session, caller, appointment_id, body.status))


@router.get("/appointment-types", responses=READ, summary="Appointment types and their durations")
async def list_types(
    caller: Reader,
    session: DbSession,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[AppointmentTypeOut]:
    return await page(session, service.types(caller), AppointmentTypeOut, cursor, limit)


@router.post(
    "/appointment-types",
    status_code=status.HTTP_201_CREATED,
    responses=READ,
    summary="Add an appointment type",
)
async def create_type(
    body: AppointmentTypeIn, caller: Manager, session: DbSession
) -> AppointmentTypeOut:
    return AppointmentTypeOut.model_validate(await service.create_type(session, caller, body))


@router.get("/appointment-types/{type_id}", responses=ONE, summary="One appointment type")
async def get_type(type_id: uuid.UUID, caller: Reader, session: DbSession) -> AppointmentTypeOut:
    return AppointmentTypeOut.model_validate(
        await get_or_404(session, caller, AppointmentType, type_id, "appointment type")
    )


@router.patch("/appointment-types/{type_id}", responses=ONE, summary="Change an appointment type")
async def update_type(
    type_id: uuid.UUID, body: AppointmentTypePatch, caller: Manager, session: DbSession
) -> AppointmentTypeOut:
    return AppointmentTypeOut.model_validate(
        await service.update_type(session, caller, type_id, body)
    )
