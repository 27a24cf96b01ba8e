"""Patients: pets, their owners' link, alerts and weight history.

A pet's alerts are clinical free text ("bites when muzzled", "allergic to penicillin"): they
are sealed with the clinic's data key, bound to the clinic, ``pets.alerts`` and the pet's row,
as one JSON list (ADR 0038), and opened by :func:`to_out`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.appointments.models import Appointment
from app.customers.models import Customer
from app.db.repository import apply, belongs_to, constraint_of, get_or_404, of_clinic, referenced
from app.db.tenancy import Tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.problems import Conflict
from app.pets.models import Pet, Species, WeightMeasurement
from app.pets.schemas import PetIn, PetOut, PetPatch, PetStored, WeightIn, WeightOut
from app.records.models import MedicalRecord

_MICROCHIP_TAKEN = Conflict("Another pet of this clinic has this microchip number.")
ALERTS = "pets.alerts"
"""What a pet's sealed alerts are bound to, with the clinic and the pet's id."""

rotation.seals(rotation.SealedColumn("pets", "alerts_sealed", ALERTS, "tenant_id"))


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
    pet = Pet(id=new_id(), tenant_id=tenant.clinic_id, **data.model_dump(exclude={"alerts"}))
    pet.alerts_sealed = await seal_alerts(session, tenant, pet.id, data.alerts)
    session.add(pet)
    await _flush(session)
    return pet


async def update(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID, changes: PetPatch
) -> Pet:
    pet = await get_or_404(session, tenant, Pet, pet_id, "pet")
    if "customer_id" in changes.model_fields_set:
        await referenced(session, tenant, Customer, changes.customer_id, "customer_id", "customer")
    if "alerts" in changes.model_fields_set:
        # Sealed before the row changes: a key read then flushes nothing half-done (ADR 0032).
        sealed = await seal_alerts(session, tenant, pet.id, changes.alerts)
        if await alerts_of(session, tenant, pet.id, pet.alerts_sealed) != changes.alerts:
            pet.alerts_sealed = sealed
    apply(pet, changes, exclude={"alerts"})
    await _flush(session)
    return pet


async def seal_alerts(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID, alerts: list[str]
) -> bytes | None:
    """``alerts`` sealed for the pet's row; None when there are none."""
    if not alerts:
        return None
    plain = json.dumps(alerts, ensure_ascii=False)
    return await keys.seal(session, keys.scope_of(session, tenant), ALERTS, pet_id, plain)


async def alerts_of(
    session: AsyncSession, tenant: Tenant, pet_id: uuid.UUID, sealed: bytes | None
) -> list[str]:
    if sealed is None:
        return []
    scope = keys.scope_of(session, tenant)
    alerts: list[str] = json.loads(await keys.unseal(session, scope, ALERTS, pet_id, sealed))
    return alerts


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


async def to_out(session: AsyncSession, tenant: Tenant, pets: Sequence[Any]) -> list[PetOut]:
    """The pets (rows of :class:`PetStored`'s columns, or pets) as the API shows them, their
    alerts opened."""
    out = []
    for pet in pets:
        values = {name: getattr(pet, name) for name in _STORED}
        values["alerts"] = await alerts_of(session, tenant, pet.id, values.pop("alerts_sealed"))
        out.append(PetOut.model_validate(values))
    return out


_STORED = tuple(PetStored.model_fields)


def weight_out(weight: WeightMeasurement) -> WeightOut:
    return WeightOut.model_validate(weight)
