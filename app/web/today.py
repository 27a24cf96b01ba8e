"""The day's page: every appointment of the clinic's today, in order, with who, where and the
patient's alerts, as the reception desk and the vets start their day."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.appointments import service as appointments
from app.appointments.models import Appointment, Status
from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.clinics import service as clinics
from app.customers.models import Customer
from app.db.repository import of_clinic
from app.db.session import DbSession
from app.pets import service as pets
from app.pets.models import Pet
from app.pets.schemas import PetOut
from app.staff import service as staff
from app.web.deps import view
from app.web.pages import Clinic, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[Principal, Depends(requires(Action.appointments_read))]
ARRIVED = (Status.checked_in, Status.in_exam, Status.completed)


@dataclass(frozen=True)
class Visit:
    appointment: Appointment
    pet: PetOut | None
    client: str
    vet: str
    room: str

    @property
    def arrived(self) -> bool:
        return self.appointment.status in ARRIVED


@router.get("/")
async def today(request: Request, caller: Reader, session: DbSession) -> Response:
    viewer, clinic = await view(session, caller)
    day = clinic.today()
    found = await visits_on(session, caller, clinic, day)
    return render(
        request,
        "today.html",
        viewer=viewer,
        clinic=clinic,
        day=day,
        visits=found,
        arrived=sum(visit.arrived for visit in found),
    )


async def visits_on(
    session: DbSession, caller: Principal, clinic: Clinic, day: dt.date
) -> list[Visit]:
    """The clinic's appointments of ``day`` (in its time zone), in order, as visits."""
    query = appointments.search(
        caller,
        day=day,
        timezone=clinic.timezone,
        vet_id=None,
        status=None,
        pet_id=None,
        room_id=None,
    ).order_by(Appointment.starts_at, Appointment.id)
    return await visits(session, caller, list((await session.scalars(query)).all()))


async def visits(session: DbSession, caller: Principal, booked: list[Appointment]) -> list[Visit]:
    pet_ids = {a.pet_id for a in booked}
    found = (await session.scalars(of_clinic(caller, Pet).where(Pet.id.in_(pet_ids)))).all()
    by_pet = {pet.id: pet for pet in await pets.to_out(session, caller, found)}
    owners = await session.scalars(
        of_clinic(caller, Customer).where(Customer.id.in_({p.customer_id for p in found}))
    )
    clients = {c.id: f"{c.first_name} {c.last_name}" for c in owners}
    vets = {row.user_id: row.name for row in await session.execute(staff.members(caller))}
    rooms: dict[uuid.UUID | None, str] = {
        room.id: room.name for room in await session.scalars(clinics.rooms(caller, None))
    }
    return [
        Visit(
            appointment=a,
            pet=by_pet.get(a.pet_id),
            client=clients.get(by_pet[a.pet_id].customer_id, "") if a.pet_id in by_pet else "",
            vet=vets.get(a.vet_id, ""),
            room=rooms.get(a.room_id, ""),
        )
        for a in booked
    ]
