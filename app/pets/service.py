"""Patients: pets, their owners' link, alerts and weight history."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import Select, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.appointments.models import Appointment
from app.customers.models import Customer
from app.db.repository import apply, belongs_to, constraint_of, get_or_404, of_clinic, referenced
from app.db.tenancy import Tenant
from app.kit.clock import utcnow
from app.kit.problems import Conflict
from app.pets.models import Pet, Species, WeightMeasurement
from app.pets.schemas import PetIn, PetOut, PetPatch, WeightIn, WeightOut
from app.records.models import MedicalRecord

_MICROCHIP_TAKEN = Conflict("Another pet of this clinic has this microchip number.")


def search(
    tenant: Tenant,
    customer_id: uuid.UUID | None,
    species: Species | None,
    q: str | None,
    include_deceased: bool,
) -> Select[Pet]:
    query = of_clinic(tenant, Pet)
    if customer_id:
        query = query.where(Pet.customer_id == customer_id)
    if species:
        query = query.where(Pet.species == species)
    if q:
        query = query.where(
            func.lower(Pet.name).contains(q.lower(), autoescape=True) | (Pet.microchip == q)
        )
    if not include_deceased:
        query = query.where(Pet.deceased.is_(False))
    return query


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        if constraint_of(exc) == "uq_pets_tenant_id_microchip":
            raise _MICROCHIP_TAKEN from exc
        raise


async def create(session: AsyncSession, tenant: Tenant, data: PetIn) -> Pet:
    await referenced(session, tenant, Customer, data.customer_id, "customer_id", "customer")
    pet = Pet(tenant_id=tenant.clinic_id, **data.model_dump())
    session.add(pet)
    await _flush(session)
    return pet


async def update(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID, changes: PetPatch
) -> Pet:
    pet = await get_or_404(session, tenant, Pet, pet_id, "pet")
    if "customer_id" in changes.model_fields_set:
        await referenced(session, tenant, Customer, changes.customer_id, "customer_id", "customer")
    apply(pet, changes)
    await _flush(session)
    return pet


async def delete(session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID) -> None:
    pet = await get_or_404(session, tenant, Pet, pet_id, "pet")
    history = select(
        exists().where(belongs_to(tenant, Appointment), Appointment.pet_id == pet_id)
        | exists().where(belongs_to(tenant, MedicalRecord), MedicalRecord.pet_id == pet_id)
    )
    if await session.scalar(history):
        raise Conflict("The pet has appointments or records; mark it deceased instead.")
    await session.delete(pet)
    await session.flush()


async def add_weight(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID, data: WeightIn, by: uuid.UUID
) -> WeightMeasurement:
    await get_or_404(session, tenant, Pet, pet_id, "pet")
    weight = WeightMeasurement(
        tenant_id=tenant.clinic_id,
        pet_id=pet_id,
        weight_kg=Decimal(str(data.weight_kg)),
        measured_at=data.measured_at or utcnow(),
        recorded_by=by,
    )
    session.add(weight)
    await session.flush()
    return weight


async def weights(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID
) -> list[WeightMeasurement]:
    await get_or_404(session, tenant, Pet, pet_id, "pet")
    result = await session.scalars(
        of_clinic(tenant, WeightMeasurement)
        .where(WeightMeasurement.pet_id == pet_id)
        .order_by(WeightMeasurement.measured_at, WeightMeasurement.id)
    )
    return list(result.all())


def to_out(pet: Pet) -> PetOut:
    return PetOut.model_validate(pet)


def weight_out(weight: WeightMeasurement) -> WeightOut:
    return WeightOut.model_validate(weight)
