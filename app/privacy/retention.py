"""Clients and medical records kept no longer than the clinic's policies say (GDPR art. 5(1)(e),
storage limitation; ADRs 0031 and 0035).

**Clients** (:func:`apply_policies`, ADR 0031):

Each clinic sets ``inactive_client_years`` (7 by default; null: kept until erased on request).
A client with no activity for that long is erased as on request (:func:`app.privacy.service.
erase`: identity gone, consent withdrawn, the animals' clinical records kept), by the operator's
``vetify retention --apply``. Activity is anything the clinic did with or for them: a change to
them or their pets, a consent given or withdrawn, a visit booked (a future one keeps them
active), a medical record. A client under a legal hold is kept and counted; one already erased
is not looked at again.

**Medical records** (:func:`remove_records`, ADR 0035): a patient's records are kept for the
clinic's ``record_retention_years`` after its last visit, or, if it set none, for the minimum
the operator configured for the clinic's country (``VETIFY_RECORD_RETENTION_YEARS``); a clinic
cannot set less. Once a patient's newest record and every appointment of it are older than that,
and its owner is under no legal hold, its records go together (vaccinations, prescriptions,
addenda, files and their bytes): a patient's history is kept whole or not at all. The pet stays.

Both run like the rest of ``vetify retention``: the clinics and their policies read as the backup
role, the erasures made as the schema's owner a clinic at a time (row-level security holds the
owner to one clinic too), a batch per transaction, each an audited change of the clinic's trail
(action ``job:retention``). Without ``apply`` it only counts.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, Select, and_, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute, aliased

from app.appointments.models import Appointment
from app.attachments.models import Attachment
from app.customers.models import ConsentEvent, Customer
from app.db.repository import of_clinic
from app.db.session import role_engine
from app.db.tenancy import InClinic, Tenant, enter_tenant
from app.kit import context
from app.kit.storage import Storage
from app.pets.models import Pet
from app.privacy import service
from app.records.models import MedicalRecord

BATCH = 100
TASK = "retention"
YEAR = dt.timedelta(days=365.25)


@dataclass(frozen=True, slots=True)
class Inactive:
    """What a clinic's policy found: clients erased (or to be, in a dry run), clients kept for
    a legal hold."""

    clinic_id: uuid.UUID
    years: int
    erased: int
    held: int

    def line(self, *, applied: bool) -> str:
        done = "erased" if applied else "would be erased"
        held = f"; {self.held} kept under a legal hold" if self.held else ""
        return (
            f"clinic {self.clinic_id}: {self.erased} clients inactive for {self.years} years"
            f" {done}{held}"
        )


def inactive_since(tenant: Tenant, cutoff: dt.datetime) -> ColumnElement[bool]:
    """A client (not erased) the clinic has done nothing with or for since ``cutoff``."""
    pets = and_(Pet.tenant_id == tenant.clinic_id, Pet.customer_id == Customer.id)
    return and_(
        Customer.erased_at.is_(None),
        Customer.updated_at < cutoff,
        ~exists().where(
            ConsentEvent.tenant_id == tenant.clinic_id,
            ConsentEvent.customer_id == Customer.id,
            ConsentEvent.recorded_at >= cutoff,
        ),
        ~exists().where(pets, Pet.updated_at >= cutoff),
        ~exists().where(
            pets,
            Appointment.tenant_id == tenant.clinic_id,
            Appointment.pet_id == Pet.id,
            Appointment.starts_at >= cutoff,
        ),
        ~exists().where(
            pets,
            MedicalRecord.tenant_id == tenant.clinic_id,
            MedicalRecord.pet_id == Pet.id,
            MedicalRecord.updated_at >= cutoff,
        ),
    )


async def apply_policies(
    backup_url: str,
    owner_url: str,
    storage: Storage,
    now: dt.datetime,
    *,
    apply: bool,
    batch: int = BATCH,
) -> list[Inactive]:
    """Each clinic's policy applied (or, without ``apply``, counted): the clinics that had any
    inactive client."""

    async def one(owner: AsyncEngine, row: Row[Any]) -> Inactive | None:
        sessions = async_sessionmaker(owner, expire_on_commit=False)
        clinic_id, years = row.id, row.inactive_client_years
        cutoff = now - years * YEAR
        found = await _clinic(sessions, storage, clinic_id, years, cutoff, apply=apply, batch=batch)
        return found if found.erased or found.held else None

    policies = (
        "SELECT id, inactive_client_years FROM clinics"
        " WHERE inactive_client_years IS NOT NULL ORDER BY id"
    )
    return await each_clinic(backup_url, owner_url, policies, one)


R = TypeVar("R")


async def each_clinic(
    backup_url: str,
    owner_url: str,
    clinics: str,
    run: Callable[[AsyncEngine, Row[Any]], Awaitable[R | None]],
) -> list[R]:
    """``run`` for each row of the query ``clinics`` (SQL), read as the backup role (which sees
    every clinic), with an engine of the schema's owner, as the retention job (the trail's
    action: ``job:retention``); what it returned, but None."""
    reader, owner = (role_engine(url) for url in (backup_url, owner_url))
    try:
        async with reader.connect() as connection:
            rows = (await connection.execute(text(clinics))).all()
        found = []
        with context.bound(context.Context(task=TASK)):
            for row in rows:
                result = await run(owner, row)
                if result is not None:
                    found.append(result)
        return found
    finally:
        await reader.dispose()
        await owner.dispose()


async def _clinic(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    clinic_id: uuid.UUID,
    years: int,
    cutoff: dt.datetime,
    *,
    apply: bool,
    batch: int,
) -> Inactive:
    tenant = InClinic(clinic_id)
    inactive = inactive_since(tenant, cutoff)
    async with sessions() as session, session.begin():
        await enter_tenant(session, clinic_id)
        held = await _count(session, tenant, and_(inactive, Customer.legal_hold.is_not(None)))
        due = and_(inactive, Customer.legal_hold.is_(None))
        if not apply:
            return Inactive(clinic_id, years, await _count(session, tenant, due), held)

    async def erase(session: AsyncSession, ids: Sequence[uuid.UUID]) -> tuple[int, list[str]]:
        files = []
        for customer_id in ids:
            files += (await service.erase(session, tenant, customer_id, None))[1]
        return len(ids), files

    # Held until erased: a hold or an erasure asked for meanwhile waits, then sees the erasure.
    # One a request holds now is left for the next run.
    query = of_clinic(tenant, Customer).where(due).with_only_columns(Customer.id)
    erased, _ = await _in_batches(sessions, storage, tenant, query, Customer.id, erase, batch)
    return Inactive(clinic_id, years, erased, held)


async def _in_batches(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    tenant: Tenant,
    query: Select[Any],
    key: InstrumentedAttribute[uuid.UUID],
    act: Callable[[AsyncSession, Sequence[uuid.UUID]], Awaitable[tuple[int, list[str]]]],
    batch: int,
) -> tuple[int, int]:
    """``act`` on the ids ``query`` finds (by ``key``), ``batch`` at a time, each batch in a
    transaction of its own in the clinic, its rows held (``SKIP LOCKED``: one a request holds
    is left for the next run), the files ``act`` names deleted once it commits (a row naming a
    file is gone first). Returns how many ids, and the sum of what ``act`` counted."""
    found = counted = 0
    while True:
        async with sessions() as session, session.begin():
            await enter_tenant(session, tenant.clinic_id)
            ids = (
                await session.scalars(
                    query.order_by(key).limit(batch).with_for_update(skip_locked=True)
                )
            ).all()
            done, files = await act(session, ids)
        for file in files:
            await storage.delete(file)
        found, counted = found + len(ids), counted + done
        if len(ids) < batch:
            return found, counted


async def _count(session: AsyncSession, tenant: Tenant, where: ColumnElement[bool]) -> int:
    query = (
        select(func.count())
        .select_from(Customer)
        .where(Customer.tenant_id == tenant.clinic_id, where)
    )
    return int(await session.scalar(query) or 0)


@dataclass(frozen=True, slots=True)
class Expired:
    """What a clinic's record policy found: patients whose records were removed (or would be,
    in a dry run), and those kept for their owner's legal hold."""

    clinic_id: uuid.UUID
    years: int
    patients: int
    records: int
    held: int

    def line(self, *, applied: bool) -> str:
        done = "removed" if applied else "would be removed"
        held = f"; {self.held} patients kept under a legal hold" if self.held else ""
        return (
            f"clinic {self.clinic_id}: {self.records} medical records of {self.patients} patients"
            f" last seen over {self.years} years ago {done}{held}"
        )


def last_seen_before(tenant: Tenant, cutoff: dt.datetime) -> ColumnElement[bool]:
    """A pet with medical records, none of them and no appointment of it since ``cutoff``."""
    visit = aliased(MedicalRecord)  # correlated to the pet only, wherever this is used
    of_pet = (visit.tenant_id == tenant.clinic_id, visit.pet_id == Pet.id)
    return and_(
        exists().where(*of_pet),
        ~exists().where(*of_pet, visit.visited_at >= cutoff),
        ~exists().where(
            Appointment.tenant_id == tenant.clinic_id,
            Appointment.pet_id == Pet.id,
            Appointment.starts_at >= cutoff,
        ),
    )


async def remove_records(
    backup_url: str,
    owner_url: str,
    storage: Storage,
    now: dt.datetime,
    minimum_years: Callable[[str | None], int],
    *,
    apply: bool,
    batch: int = BATCH,
) -> list[Expired]:
    """Each clinic's record policy applied (or, without ``apply``, counted): the clinics that
    had any patient past it. ``minimum_years``: the legal minimum of a country."""

    async def one(owner: AsyncEngine, row: Row[Any]) -> Expired | None:
        sessions = async_sessionmaker(owner, expire_on_commit=False)
        clinic_id, country, years = row.id, row.country, row.record_retention_years
        kept = max(years or 0, minimum_years(country))
        cutoff = now - kept * YEAR
        found = await _records_of(
            sessions, storage, clinic_id, kept, cutoff, apply=apply, batch=batch
        )
        return found if found.patients or found.held else None

    policies = "SELECT id, country, record_retention_years FROM clinics ORDER BY id"
    return await each_clinic(backup_url, owner_url, policies, one)


async def _records_of(
    sessions: async_sessionmaker[AsyncSession],
    storage: Storage,
    clinic_id: uuid.UUID,
    years: int,
    cutoff: dt.datetime,
    *,
    apply: bool,
    batch: int,
) -> Expired:
    tenant = InClinic(clinic_id)
    past = last_seen_before(tenant, cutoff)
    owner_held = exists().where(
        Customer.tenant_id == tenant.clinic_id,
        Customer.id == Pet.customer_id,
        Customer.legal_hold.is_not(None),
    )
    due = and_(past, ~owner_held)
    async with sessions() as session, session.begin():
        await enter_tenant(session, clinic_id)
        held = await _pets(session, tenant, and_(past, owner_held))
        if not apply:
            records = await session.scalar(
                select(func.count())
                .select_from(MedicalRecord)
                .join(Pet, and_(Pet.tenant_id == clinic_id, Pet.id == MedicalRecord.pet_id))
                .where(MedicalRecord.tenant_id == clinic_id, due)
            )
            return Expired(clinic_id, years, await _pets(session, tenant, due), records or 0, held)
    query = of_clinic(tenant, Pet).where(due).with_only_columns(Pet.id)
    remove = functools.partial(_remove, tenant=tenant)
    patients, records = await _in_batches(sessions, storage, tenant, query, Pet.id, remove, batch)
    return Expired(clinic_id, years, patients, records, held)


async def _remove(
    session: AsyncSession, pet_ids: Sequence[uuid.UUID], *, tenant: Tenant
) -> tuple[int, list[str]]:
    """The pets' medical records deleted, each part through the ORM (an event of the clinic's
    trail); returns how many records, and the storage keys of their files."""
    found = (
        await session.scalars(
            of_clinic(tenant, MedicalRecord).where(MedicalRecord.pet_id.in_(pet_ids))
        )
    ).all()
    record_ids = [record.id for record in found]
    attached = (
        await session.scalars(
            of_clinic(tenant, Attachment).where(Attachment.record_id.in_(record_ids))
        )
    ).all()
    for attachment in attached:
        await session.delete(attachment)
    for record in found:
        for addendum in record.addenda:
            await session.delete(addendum)
        await session.delete(record)  # its vaccinations and prescriptions with it
    await session.flush()
    return len(found), [attachment.storage_key for attachment in attached]


async def _pets(session: AsyncSession, tenant: Tenant, where: ColumnElement[bool]) -> int:
    query = select(func.count()).select_from(Pet).where(Pet.tenant_id == tenant.clinic_id, where)
    return int(await session.scalar(query) or 0)
