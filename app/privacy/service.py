"""Erasure of a client's personal data (GDPR art. 17), and the legal hold that stops it.

An erased client's row stays, anonymised, so that what the clinic must keep still hangs
together: their pets and the pets' medical records (clinical records are kept for the legal
minimum, with the owner no longer identifiable). Everything that identifies the person goes,
in one transaction, audited like any change (the trail names the fields, never their values):

* their names become ``Erased client``; their sealed contact details and address, and the
  blind indexes that found them, are deleted, and their language reset;
* each consent still granted is withdrawn (consent history is append-only: a withdrawal is
  added, nothing is deleted), so no sender may contact them;
* upcoming appointments of their pets are cancelled, and their reason and notes cleared (they
  were about a visit that will not happen; past visits are clinical history and stay);
* their exports not yet downloaded expire, and their files are deleted.

The row is locked first, as every change of a customer locks it, so a change racing an erasure
either lands before it (and is erased) or is refused after it; never written over it.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.appointments.models import Appointment, Status
from app.customers import service as customers
from app.db.repository import of_clinic
from app.db.tenancy import Tenant
from app.kit.clock import utcnow
from app.pets.models import Pet
from app.privacy import exports
from app.privacy.schemas import ErasureOut
from app.records.models import MedicalRecord

ERASED_NAMES = {"first_name": "Erased", "last_name": "client"}
PERSONAL_COLUMNS = (*ERASED_NAMES, *customers.SEALED_COLUMNS, "preferred_language")
"""Every column of ``customers`` that describes the person (a test holds this to the model)."""
PERSONAL_FIELDS = (*ERASED_NAMES, *sorted(customers.CONTACT_FIELDS), "preferred_language")
"""The same, as the API names them (the erasure's report)."""
UPCOMING = (Status.scheduled, Status.confirmed)
Ids = Select[uuid.UUID]


async def erase(
    session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID, by: uuid.UUID | None
) -> tuple[ErasureOut, list[str]]:
    """The erasure's report, and the storage keys of the client's exports to delete once it
    has committed. ``by``: the member who erased them (None: the clinic's retention policy)."""
    customer = await customers.get_to_change(session, tenant, customer_id)
    if customer.legal_hold is not None:
        raise customers.LegalHold(customer.legal_hold)
    for field, placeholder in ERASED_NAMES.items():
        setattr(customer, field, placeholder)
    for field in customers.SEALED_COLUMNS:  # contact details, sealed, and their indexes
        setattr(customer, field, None)
    customer.preferred_language = "en"
    customer.erased_at = utcnow()
    consents = await customers.withdraw_consents(session, tenant, customer.id, by)
    pets = of_clinic(tenant, Pet).where(Pet.customer_id == customer.id).with_only_columns(Pet.id)
    cancelled = await _cancel_upcoming(session, tenant, pets)
    exported = await exports.withdraw(session, tenant, customer)
    await session.flush()
    report = ErasureOut(
        customer_id=customer.id,
        erased_at=customer.erased_at,
        fields_erased=list(PERSONAL_FIELDS),
        consents_withdrawn=consents,
        appointments_cancelled=cancelled,
        pets_kept=await _count(session, pets),
        records_kept=await _count(
            session,
            of_clinic(tenant, MedicalRecord)
            .where(MedicalRecord.pet_id.in_(pets.scalar_subquery()))
            .with_only_columns(MedicalRecord.id),
        ),
        exports_withdrawn=len(exported),
    )
    return report, [e.storage_key for e in exported if e.storage_key is not None]


async def _cancel_upcoming(session: AsyncSession, tenant: Tenant, pets: Ids) -> list[uuid.UUID]:
    # Through the ORM, not one UPDATE: each cancellation is an audited change of its own.
    upcoming = await session.scalars(
        of_clinic(tenant, Appointment)
        .where(
            Appointment.pet_id.in_(pets.scalar_subquery()),
            Appointment.starts_at > utcnow(),
            Appointment.status.in_(UPCOMING),
        )
        .order_by(Appointment.starts_at, Appointment.id)
        .with_for_update()
    )
    cancelled = []
    for appointment in upcoming:
        appointment.status = Status.cancelled
        appointment.reason = None
        appointment.notes = None
        cancelled.append(appointment.id)
    return cancelled


async def _count(session: AsyncSession, ids: Ids) -> int:
    return await session.scalar(select(func.count()).select_from(ids.subquery())) or 0


async def hold(session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID, reason: str) -> None:
    customer = await customers.get_to_change(session, tenant, customer_id)
    customer.legal_hold = reason
    await session.flush()


async def lift_hold(session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID) -> None:
    customer = await customers.get_to_change(session, tenant, customer_id)
    customer.legal_hold = None
    await session.flush()
