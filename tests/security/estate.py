"""Clinic data for the attack suites: one of everything, fresh targets, and snapshots.

* :func:`furnish` gives a clinic one row in every tenant table, consistently linked (the
  appointment is for the clinic's pet, the record for that appointment), so every list has
  something to show and every table has rows to hide.
* :func:`fresh` makes a new resource of a kind, with nothing depending on it, so that a route
  may read, change or delete it.
* :func:`rows_of` is a clinic's data as text, row by row, to prove an attack changed nothing;
  :func:`ids_of` is every id in it, to prove a response leaked none.

Everything is made through the factories, as the service's role with the clinic's context set.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.models import CredentialKind, Role, TokenPurpose
from app.billing.models import BillingAccount
from app.db.base import Base, TenantScoped
from app.kit import crypto
from app.kit.clock import utcnow
from fixtures import files
from fixtures.factories import (
    AppointmentFactory,
    AppointmentTypeFactory,
    ConsentEventFactory,
    CredentialFactory,
    CustomerFactory,
    InvitationFactory,
    LocationFactory,
    MedicalRecordFactory,
    MembershipFactory,
    PetFactory,
    PrescriptionFactory,
    RoomFactory,
    UserFactory,
    VaccinationFactory,
    WeightFactory,
    create,
    create_addendum,
)
from tests.harness.world import Actor, ClinicWorld, World

# Every appointment any test books gets its own day after one fixed start: a day, because an
# appointment type may last hours (the factory's surgery: 90 minutes); fixed, because a start
# recomputed per call moves under a run that crosses midnight. Within a year of it, as the
# service books only within its horizon of now: after a year of days, the next round of days
# starts three hours later.
_slots = itertools.count(1)
_START = utcnow().replace(hour=9, minute=0, second=0, microsecond=0) + dt.timedelta(days=2)


def next_slot() -> dt.datetime:
    slot = next(_slots)
    return _START + dt.timedelta(days=slot % 365, hours=3 * (slot // 365 % 4))


TENANT_MODELS = sorted(
    (mapper.class_ for mapper in Base.registry.mappers if issubclass(mapper.class_, TenantScoped)),
    key=lambda model: model.__tablename__,
)
"""Every tenant model, by table name: what the tenancy suites cover table by table."""


@dataclass
class Estate:
    """A furnished clinic: ``ids[kind]`` is one resource of each kind."""

    clinic: ClinicWorld
    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    invitation_token: str = ""
    verification_token: str = ""
    """A live link verifying the owner's address."""
    reset_token: str = ""
    """A live password-reset link for a user of its own (resetting ends their credentials)."""
    stripe_customer: str = ""
    """Its billing account's customer in the fake Stripe."""

    def __getitem__(self, kind: str) -> uuid.UUID:
        return self.ids[kind]


Maker = Callable[[World, ClinicWorld, Actor], Awaitable[uuid.UUID]]


async def _customer(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    customer = await world.make(clinic, CustomerFactory)
    return uuid.UUID(str(customer.id))


async def _pet(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    pet = await world.make(clinic, PetFactory, customer_id=await _customer(world, clinic, actor))
    return uuid.UUID(str(pet.id))


async def _appointment(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    starts_at = next_slot()
    appointment = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=await _pet(world, clinic, actor),
        vet_id=clinic.actors[Role.vet].user.id,
        starts_at=starts_at,
        ends_at=starts_at + dt.timedelta(minutes=20),
    )
    return uuid.UUID(str(appointment.id))


async def _record(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    record = await world.make(
        clinic,
        MedicalRecordFactory,
        pet_id=await _pet(world, clinic, actor),
        author_id=clinic.actors[Role.vet].user.id,
    )
    return uuid.UUID(str(record.id))


async def _attachment(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    """A file on a new record, its bytes in the app's storage (downloads work)."""
    record_id = await _record(world, clinic, actor)
    attachment = await world.attach(clinic, record_id, files.png_with_comment(f"{clinic.id}"))
    return uuid.UUID(str(attachment.id))


async def _client_export(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    export = await world.client_export(clinic, await _customer(world, clinic, actor))
    return uuid.UUID(str(export.id))


async def _clinic_export(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    return uuid.UUID(str((await world.clinic_export(clinic)).id))


async def _member(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    async with world.session(clinic.id) as session:
        user = await create(session, UserFactory)
        await create(session, MembershipFactory, user_id=user.id, role=Role.technician)
    return uuid.UUID(str(user.id))


async def _token(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    """An API token of the acting user: tokens are only ever the caller's own."""
    credential = await world.make(clinic, CredentialFactory, user_id=actor.user.id)
    return uuid.UUID(str(credential.id))


async def _invitation(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    invitation = await world.make(clinic, InvitationFactory, invited_by=clinic.owner.user.id)
    return uuid.UUID(str(invitation.id))


def _factory(factory_class: object, **fields: Callable[[ClinicWorld], object]) -> Maker:
    async def make(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
        values = {name: value(clinic) for name, value in fields.items()}
        row = await world.make(clinic, factory_class, **values)
        return uuid.UUID(str(row.id))

    return make


async def _existing_vet(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    return uuid.UUID(str(clinic.actors[Role.vet].user.id))


async def _the_clinic(world: World, clinic: ClinicWorld, actor: Actor) -> uuid.UUID:
    return clinic.id


MAKERS: dict[str, Maker] = {
    "location": _factory(LocationFactory),
    "room": _factory(RoomFactory, location_id=lambda c: c.setup.location.id),
    "appointment_type": _factory(AppointmentTypeFactory),
    "customer": _customer,
    "pet": _pet,
    "appointment": _appointment,
    "medical_record": _record,
    "attachment": _attachment,
    "client_export": _client_export,
    "clinic_export": _clinic_export,
    "member": _member,
    "token": _token,
    "invitation": _invitation,
    # Not made fresh: a clinic's own vet and the clinic itself.
    "vet": _existing_vet,
    "clinic": _the_clinic,
}
"""Resource kind -> how to make a new one in a clinic (acting as ``actor`` where it matters)."""


async def fresh(
    world: World, clinic: ClinicWorld, kind: str, actor: Actor | None = None
) -> uuid.UUID:
    return await MAKERS[kind](world, clinic, actor or clinic.owner)


async def furnish(world: World, clinic: ClinicWorld) -> Estate:
    """One row in every tenant table, linked as a real clinic's data would be."""
    estate = Estate(clinic)
    owner, vet = clinic.owner, clinic.actors[Role.vet]
    async with world.session(clinic.id) as session:
        room = await create(session, RoomFactory, location_id=clinic.setup.location.id)
        kind = await create(session, AppointmentTypeFactory)
        customer = await create(session, CustomerFactory)
        await create(session, ConsentEventFactory, customer_id=customer.id)
        pet = await create(session, PetFactory, customer_id=customer.id)
        await create(session, WeightFactory, pet_id=pet.id)
        starts_at = next_slot()
        appointment = await create(
            session,
            AppointmentFactory,
            pet_id=pet.id,
            vet_id=vet.user.id,
            room_id=room.id,
            appointment_type_id=kind.id,
            starts_at=starts_at,
            ends_at=starts_at + dt.timedelta(minutes=20),
        )
        record = await create(
            session,
            MedicalRecordFactory,
            pet_id=pet.id,
            appointment_id=appointment.id,
            author_id=vet.user.id,
            vaccinations=[VaccinationFactory.build()],
            prescriptions=[PrescriptionFactory.build()],
        )
        await create_addendum(session, record_id=record.id, author_id=vet.user.id)
        secret, secret_hash = crypto.new_credential("vti", clinic.id)
        invitation = await create(
            session, InvitationFactory, invited_by=owner.user.id, secret_hash=secret_hash
        )
        credential = await create(session, CredentialFactory, user_id=owner.user.id)
        await create(session, CredentialFactory, user_id=owner.user.id, kind=CredentialKind.session)
        # A Stripe customer (the fake Stripe's, made over its API): the billing portal opens.
        account = await session.scalar(select(BillingAccount))
        estate.stripe_customer = await _stripe_customer(world, clinic)
        account.stripe_customer_id = estate.stripe_customer
    # The file names its clinic, so a download shows whose it is (and leaks of another's).
    attachment = await world.attach(clinic, record.id, files.png_with_comment(f"{clinic.id}"))
    estate.invitation_token = secret
    client_export = (await world.client_export(clinic, customer.id)).id
    clinic_export = (await world.clinic_export(clinic)).id
    await renew_links(world, estate)
    estate.ids = {
        "clinic": clinic.id,
        "location": clinic.setup.location.id,
        "room": room.id,
        "appointment_type": kind.id,
        "customer": customer.id,
        "pet": pet.id,
        "appointment": appointment.id,
        "medical_record": record.id,
        "attachment": attachment.id,
        "client_export": client_export,
        "clinic_export": clinic_export,
        "invitation": invitation.id,
        "token": credential.id,
        "member": clinic.actors[Role.technician].user.id,
        "vet": vet.user.id,
    }
    return estate


async def furnished_pair(world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A."""
    # Every role: an owner attacks; the authorization matrix acts as each role in turn.
    return (await furnish(world, await world.clinic()), await furnish(world, await world.clinic()))


async def renew_links(world: World, estate: Estate) -> None:
    """Live mailed links for the estate: one verifying its owner's address, and a reset link
    for a user made for it (completing a reset ends every credential of its user)."""
    estate.verification_token = await world.account_link(
        estate.clinic.owner.user, TokenPurpose.verify_email
    )
    async with world.session() as session:
        user = await create(session, UserFactory)
    estate.reset_token = await world.account_link(user, TokenPurpose.reset_password)


_TLS = ssl.create_default_context()
"""One context for the suites' Stripe clients: a client making its own reads the system's
certificate authorities each time (3% of the injection suite's time went
there)."""


async def _stripe_customer(world: World, clinic: ClinicWorld) -> str:
    settings = world.settings
    assert settings.stripe_api_key is not None
    async with httpx.AsyncClient(base_url=settings.stripe_api_base, verify=_TLS) as stripe:
        response = await stripe.post(
            "/v1/customers",
            data={"metadata[clinic_id]": str(clinic.id)},
            headers={"Authorization": f"Bearer {settings.stripe_api_key.get_secret_value()}"},
        )
    response.raise_for_status()
    return str(response.json()["id"])


# -- what a clinic's data is ---------------------------------------------------------------------
# Touched by every authenticated request (at most once a minute), so not part of "unchanged".
_VOLATILE = "last_used_at"


async def tenant_tables(engine: AsyncEngine) -> list[str]:
    """Every table with a ``tenant_id`` column, from the database's own catalogue."""
    async with engine.connect() as connection:
        result = await connection.scalars(
            text(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY 1"
            )
        )
        return list(result.all())


async def rows_of(engine: AsyncEngine, clinic_id: uuid.UUID) -> dict[str, list[str]]:
    """The clinic's rows in every table, each as its JSON text, read as the superuser (in one
    statement: suites take this before and after each request)."""
    selections = {
        table: f'SELECT (to_jsonb(t) - :volatile)::text FROM public."{table}" t'
        " WHERE tenant_id = :clinic"
        for table in await tenant_tables(engine)
    }
    selections["clinics"] = (
        "SELECT (to_jsonb(t) - :volatile)::text FROM clinics t WHERE id = :clinic"
    )
    selections["users"] = (
        "SELECT (to_jsonb(t) - :volatile)::text FROM users t"
        " WHERE id IN (SELECT user_id FROM memberships WHERE tenant_id = :clinic)"
    )
    union = " UNION ALL ".join(
        f"SELECT '{table}', row FROM ({sql}) AS rows_of_{index}(row)"
        for index, (table, sql) in enumerate(selections.items())
    )
    rows: dict[str, list[str]] = {table: [] for table in selections}
    async with engine.connect() as connection:
        found = await connection.execute(text(union), {"clinic": clinic_id, "volatile": _VOLATILE})
        for table, row in found.all():
            rows[table].append(row)
    return {table: sorted(texts) for table, texts in rows.items()}


async def ids_of(engine: AsyncEngine, clinic_id: uuid.UUID) -> set[str]:
    """Every id of the clinic's rows (the clinic's own and its members' user ids included)."""
    rows = await rows_of(engine, clinic_id)
    return {str(json.loads(row)["id"]) for table in rows.values() for row in table}
