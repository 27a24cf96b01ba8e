"""A fleet of clinics for the load run, seeded straight into the live server's database.

Thousands of HTTP sign-ups would spend the run's first minutes on argon2; the factories (the
same ones the demo seed and every other stage use) write each clinic in one transaction of its
own, entered in that clinic, so rows go in through the service's tenant stamping and row-level
security. Each clinic gets an owner (whose API token an integration holds), two vets, a
receptionist, rooms, visit types, pet owners with pets, signed records, weights and booked
appointments; its front desk and first vet are logged in (session cookies issued as a log-in
issues them).

The manifest (JSON, one object per clinic) is what the simulated users of a clinic know: their
credentials and every id seeded in their clinic. The tenancy check of the run starts from it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.appointments.models import Status
from app.auth import service as auth_service
from app.auth.models import CredentialKind, Membership, Role
from app.customers import service as customer_service
from app.db.tenancy import InClinic
from app.keys import service as keys
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.records import service as record_service
from app.settings import Environment, Settings
from fixtures.clinics import create_clinic
from fixtures.factories import (
    DEFAULT_PASSWORD,
    AppointmentFactory,
    AppointmentTypeFactory,
    ContactFactory,
    CustomerFactory,
    MedicalRecordFactory,
    MembershipFactory,
    NotesFactory,
    PetFactory,
    PrescriptionFactory,
    RoomFactory,
    UserFactory,
    VaccinationFactory,
    WeightFactory,
)
from tests.harness import canary

SLOT = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class SeededClinic:
    """What a clinic's simulated staff know: ids are strings, as JSON carries them."""

    id: str
    timezone: str
    vets: list[str]
    rooms: list[str]
    types: list[str]
    customers: list[dict[str, str]]  # id, last_name
    pets: list[dict[str, str]]  # id, name, customer_id
    records: list[dict[str, str]]  # id, pet_id
    reception_session: str
    vet_session: str
    vet_id: str
    integrator_token: str
    staff_emails: list[str]
    """Who logs in during the run (password: the factories' DEFAULT_PASSWORD)."""
    known_ids: list[str]
    """Every row id seeded in this clinic (users included): any other clinic's user who is
    shown one of them has been shown a foreign row."""


def _settings() -> Settings:
    # Only the credentials' lifetimes are read from it: the service's defaults.
    return Settings(_env_file=None, env=Environment.test)


async def _seed_clinic(
    session: AsyncSession, settings: Settings, number: int, customers: int, rng: random.Random
) -> SeededClinic:
    setup = await create_clinic(
        session,
        (Role.owner, Role.vet, Role.receptionist),
        name=f"Load Clinic {number:03d}",
        timezone=rng.choice(["Europe/Lisbon", "Europe/Madrid", "Europe/London"]),
    )
    second_vet = UserFactory.build()
    session.add(second_vet)
    await session.flush()
    session.add(MembershipFactory.build(user_id=second_vet.id, role=Role.vet))
    vets = [setup.staff[Role.vet], second_vet, setup.owner]
    rooms = [RoomFactory.build(id=new_id(), location_id=setup.location.id) for _ in range(2)]
    types = [AppointmentTypeFactory.build(id=new_id()) for _ in range(3)]
    owners = [CustomerFactory.build() for _ in range(customers)]
    tenant = InClinic(setup.clinic.id)
    for owner in owners:  # as the service keeps them: sealed, with their blind indexes
        await customer_service.seal_contact(session, tenant, owner, ContactFactory.build())
    session.add_all([*rooms, *types, *owners])
    await session.flush()

    pets = [
        PetFactory.build(id=new_id(), customer_id=owner.id)
        for owner in owners
        for _ in range(rng.choice([1, 1, 2]))
    ]
    session.add_all(pets)
    await session.flush()

    now = utcnow().replace(microsecond=0)
    morning = now.replace(hour=9, minute=0, second=0)
    rows: list[Any] = []
    records = []
    for slot, pet in enumerate(pets):
        visited = now - dt.timedelta(days=rng.randint(2, 300))
        record = MedicalRecordFactory.build(
            id=new_id(),
            pet_id=pet.id,
            author_id=vets[0].id,
            visited_at=visited,
            vaccinations=[VaccinationFactory.build(given_at=visited)],
            prescriptions=[PrescriptionFactory.build()],
        )
        notes = NotesFactory.build()  # sealed, as the service keeps them
        record.notes_sealed = await record_service.seal_notes(session, tenant, record.id, notes)
        records.append(record)
        rows += [WeightFactory.build(pet_id=pet.id, measured_at=visited), record]
        # Booked on the coming days, one vet and room per slot: no two overlap.
        starts_at = morning + dt.timedelta(days=1 + slot // 16) + SLOT * (slot % 16)
        rows.append(
            AppointmentFactory.build(
                pet_id=pet.id,
                vet_id=vets[slot % 2].id,
                room_id=rooms[slot % 2].id,
                appointment_type_id=types[slot % 3].id,
                starts_at=starts_at,
                ends_at=starts_at + SLOT,
                status=Status.confirmed if slot % 3 else Status.scheduled,
            )
        )
    session.add_all(rows)
    await session.flush()
    # Signed on the day of the visit, so locked now: after its vaccinations and prescriptions
    # went in (a locked record takes no more).
    for record in records:
        record.signed_by, record.signed_at = vets[0].id, record.visited_at
        record.locks_at = record.visited_at + dt.timedelta(hours=24)
    await session.flush()

    memberships = {m.user_id: m for m in await session.scalars(select(Membership))}

    async def issue(role: Role, kind: CredentialKind) -> str:
        membership = memberships[setup.staff[role].id]
        issued = await auth_service.issue(session, settings, membership, kind, name="load")
        return issued.secret

    reception = await issue(Role.receptionist, CredentialKind.session)
    vet = await issue(Role.vet, CredentialKind.session)
    token = await issue(Role.owner, CredentialKind.api_token)
    known = {str(obj.id) for obj in session.identity_map.values() if hasattr(obj, "id")}
    return SeededClinic(
        id=str(setup.clinic.id),
        timezone=setup.clinic.timezone,
        vets=[str(v.id) for v in vets],
        rooms=[str(r.id) for r in rooms],
        types=[str(t.id) for t in types],
        customers=[{"id": str(c.id), "last_name": c.last_name} for c in owners],
        pets=[{"id": str(p.id), "name": p.name, "customer_id": str(p.customer_id)} for p in pets],
        records=[{"id": str(r.id), "pet_id": str(r.pet_id)} for r in records],
        reception_session=reception,
        vet_session=vet,
        vet_id=str(setup.staff[Role.vet].id),
        integrator_token=token,
        staff_emails=[setup.staff[Role.receptionist].email, second_vet.email],
        known_ids=sorted(known),
    )


async def seed_fleet(
    database_url: str, clinics: int, customers: int, *, seed: int = 17, parallel: int = 4
) -> list[SeededClinic]:
    """``clinics`` clinics of ``customers`` pet owners each, ``parallel`` transactions at once
    (as the service's role, so row-level security checks every row)."""
    keys.configure(canary.keyring())  # what the harness's servers open what is sealed with
    engine = create_async_engine(database_url, pool_size=parallel)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    settings = _settings()
    gate = asyncio.Semaphore(parallel)

    async def one(number: int) -> SeededClinic:
        async with gate, sessions() as session, session.begin():
            return await _seed_clinic(
                session, settings, number, customers, random.Random(seed + number)
            )

    try:
        return list(await asyncio.gather(*(one(n) for n in range(clinics))))
    finally:
        await engine.dispose()


def manifest(fleet: list[SeededClinic]) -> dict[str, Any]:
    """The JSON the Locust process reads (``VETIFY_LOAD_FLEET``)."""
    return {"password": DEFAULT_PASSWORD, "clinics": [asdict(clinic) for clinic in fleet]}
