"""The appointment book: a day's appointments with their next steps (check in, in
consultation, done, no-show, cancel), booking a patient into a slot, and rescheduling. A clash
is the service's 409, said on the form where the person booking reads it first."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette import status
from starlette.datastructures import FormData

from app.appointments import service as appointments
from app.appointments.models import Appointment, AppointmentType, Status
from app.appointments.rules import RESCHEDULABLE, TRANSITIONS
from app.appointments.schemas import AppointmentIn, AppointmentPatch
from app.auth.deps import AppSettings, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.clinics import service as clinics
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.problems import Conflict, InvalidInput
from app.pets.models import Pet
from app.staff import service as staff
from app.web import forms
from app.web.deps import posted, read_form, view
from app.web.pages import Clinic, Viewer, render, see_other
from app.web.today import visits_on

router = APIRouter(include_in_schema=False, dependencies=[Depends(read_form)])
Reader = Annotated[Principal, Depends(requires(Action.appointments_read))]
Writer = Annotated[Principal, Depends(requires(Action.appointments_write))]
Form = Annotated[FormData, Depends(posted)]
SLOT_FIELDS = ("date", "time", "vet_id", "room_id", "appointment_type_id", "reason")
STEP_ORDER = (
    Status.confirmed,
    Status.checked_in,
    Status.in_exam,
    Status.completed,
    Status.no_show,
    Status.cancelled,
)
SHOWN_ON = {"starts_at": "date", "ends_at": "time", "pet_id": "form"}
"""Where a refusal of the body's fields is shown on the form."""


@dataclass(frozen=True)
class Choices:
    """What a booking form offers: the clinic's staff, rooms and kinds of appointment."""

    vets: list[tuple[uuid.UUID, str]]
    rooms: list[tuple[uuid.UUID, str]]
    types: list[tuple[uuid.UUID, str]]


async def _choices(session: DbSession, caller: Principal) -> Choices:
    members = await session.execute(staff.members(caller).order_by("name"))
    rooms = await session.scalars(clinics.rooms(caller, None).order_by("name"))
    kinds = await session.scalars(
        appointments.types(caller).order_by(AppointmentType.name, AppointmentType.id)
    )
    return Choices(
        vets=[(row.user_id, row.name) for row in members if row.active],
        rooms=[(room.id, room.name) for room in rooms if room.active],
        types=[(kind.id, kind.name) for kind in kinds],
    )


def _day_of(value: str | None, clinic: Clinic) -> dt.date:
    try:
        return dt.date.fromisoformat(value) if value else clinic.today()
    except ValueError:
        return clinic.today()


@router.get("/book")
async def book(
    request: Request,
    caller: Reader,
    session: DbSession,
    day: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    viewer, clinic = await view(session, caller)
    shown = _day_of(day, clinic)
    return render(
        request,
        "book.html",
        viewer=viewer,
        clinic=clinic,
        day=shown,
        before=shown - dt.timedelta(days=1),
        after=shown + dt.timedelta(days=1),
        visits=await visits_on(session, caller, clinic, shown),
        # In the day's order: confirm, check in, start, done; then no-show and cancel.
        next_steps={state: [s for s in STEP_ORDER if s in TRANSITIONS[state]] for state in Status},
        reschedulable=RESCHEDULABLE,
        may_write=caller.can(Action.appointments_write),
    )


def _starts_at(values: dict[str, str], clinic: Clinic) -> str | None:
    """The date and time typed, in the clinic's zone, as the API's timestamp; None if either
    is missing or is not one (the model then says so on the field)."""
    try:
        local = dt.datetime.combine(
            dt.date.fromisoformat(values["date"]), dt.time.fromisoformat(values["time"])
        )
    except (KeyError, ValueError):
        return None
    return local.replace(tzinfo=clinic.zone).isoformat()


def _slot_page(
    request: Request,
    template: str,
    viewer: Viewer,
    clinic: Clinic,
    choices: Choices,
    values: dict[str, str],
    errors: forms.Errors,
    **more: object,
) -> Response:
    refused = (
        status.HTTP_409_CONFLICT if "clash" in errors else status.HTTP_422_UNPROCESSABLE_CONTENT
    )
    return render(
        request,
        template,
        status_code=refused if errors else status.HTTP_200_OK,
        viewer=viewer,
        clinic=clinic,
        choices=choices,
        values=values,
        errors=errors,
        **more,
    )


@router.get("/pets/{pet_id}/book")
async def new_appointment(
    pet_id: uuid.UUID, request: Request, caller: Writer, session: DbSession
) -> Response:
    viewer, clinic = await view(session, caller)
    pet = await get_or_404(session, caller, Pet, pet_id, "pet")
    values = {"date": clinic.today().isoformat(), "vet_id": str(caller.user_id)}
    choices = await _choices(session, caller)
    return _slot_page(request, "book_new.html", viewer, clinic, choices, values, {}, pet=pet)


@router.post("/pets/{pet_id}/book")
async def create_appointment(
    pet_id: uuid.UUID,
    request: Request,
    caller: Writer,
    session: DbSession,
    settings: AppSettings,
    form: Form,
) -> Response:
    viewer, clinic = await view(session, caller)
    pet = await get_or_404(session, caller, Pet, pet_id, "pet")
    values = forms.fields(form, SLOT_FIELDS)
    body: dict[str, object] = {
        "pet_id": str(pet_id),
        **{k: v for k, v in values.items() if k not in ("date", "time")},
    }
    starts_at = _starts_at(values, clinic)
    if starts_at is not None:
        body["starts_at"] = starts_at
    checked = forms.validate(AppointmentIn, body)
    if starts_at is None:
        checked = {"date": _WHEN, **(checked if isinstance(checked, dict) else {})}
    if not isinstance(checked, dict):
        try:
            async with forms.undone_if_refused(session):
                booked = await appointments.create(
                    session, caller, checked, settings.appointment_horizon
                )
        except InvalidInput as exc:
            checked = forms.errors_of(exc, SHOWN_ON)
        except Conflict as exc:  # the double booking the database refused
            checked = {"clash": exc.detail or exc.title}
        else:
            return see_other(f"/book?day={clinic.local(booked.starts_at).date()}#a-{booked.id}")
    choices = await _choices(session, caller)
    return _slot_page(
        request, "book_new.html", viewer, clinic, choices, values, _named(checked), pet=pet
    )


_WHEN = "Give a date and a time, such as 2030-05-01 and 09:30."


def _named(errors: forms.Errors) -> forms.Errors:
    """The model's names for the form's: the start is typed as a date and a time."""
    return {SHOWN_ON.get(name, name): message for name, message in errors.items()}


@router.get("/appointments/{appointment_id}/edit")
async def edit_appointment(
    appointment_id: uuid.UUID, request: Request, caller: Writer, session: DbSession
) -> Response:
    viewer, clinic = await view(session, caller)
    booked = await get_or_404(session, caller, Appointment, appointment_id, "appointment")
    local = clinic.local(booked.starts_at)
    values = {
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "vet_id": str(booked.vet_id),
        "room_id": str(booked.room_id or ""),
        "reason": booked.reason or "",
    }
    choices = await _choices(session, caller)
    return _slot_page(
        request, "book_edit.html", viewer, clinic, choices, values, {}, appointment=booked
    )


@router.post("/appointments/{appointment_id}/edit")
async def reschedule(
    appointment_id: uuid.UUID,
    request: Request,
    caller: Writer,
    session: DbSession,
    settings: AppSettings,
    form: Form,
) -> Response:
    viewer, clinic = await view(session, caller)
    booked = await get_or_404(session, caller, Appointment, appointment_id, "appointment")
    values = forms.fields(form, ("date", "time", "vet_id", "room_id", "reason"))
    starts_at = _starts_at(values, clinic)
    length = booked.ends_at - booked.starts_at
    body: dict[str, object] = {
        "vet_id": values.get("vet_id", ""),
        "room_id": values.get("room_id"),
        "reason": values.get("reason"),
    }
    if starts_at is not None:
        body["starts_at"] = starts_at
        body["ends_at"] = (dt.datetime.fromisoformat(starts_at) + length).isoformat()
    checked = forms.validate(AppointmentPatch, body)
    if starts_at is None:
        checked = {"date": _WHEN, **(checked if isinstance(checked, dict) else {})}
    if not isinstance(checked, dict):
        try:
            async with forms.undone_if_refused(session):
                moved = await appointments.update(
                    session, caller, appointment_id, checked, settings.appointment_horizon
                )
        except InvalidInput as exc:
            checked = forms.errors_of(exc, SHOWN_ON)
        except Conflict as exc:  # a clash, or an appointment no longer to be moved
            checked = {"clash": exc.detail or exc.title}
        else:
            return see_other(f"/book?day={clinic.local(moved.starts_at).date()}#a-{moved.id}")
        await session.refresh(booked)  # as stored: the savepoint's rollback expired it
    choices = await _choices(session, caller)
    return _slot_page(
        request,
        "book_edit.html",
        viewer,
        clinic,
        choices,
        values,
        _named(checked),
        appointment=booked,
    )


@router.post("/appointments/{appointment_id}/status")
async def change_status(
    appointment_id: uuid.UUID, caller: Writer, session: DbSession, form: Form
) -> Response:
    """A next step of the appointment's (a button per step the book offers); another is the
    service's refusal, a 409 page."""
    _, clinic = await view(session, caller)
    try:
        step = Status(str(form.get("status")))
    except ValueError:
        raise InvalidInput("Choose one of the appointment's next steps.") from None
    moved = await appointments.transition(session, caller, appointment_id, step)
    return see_other(f"/book?day={clinic.local(moved.starts_at).date()}#a-{moved.id}")
