"""Clients kept no longer than the clinic's policy says (GDPR art. 5(1)(e), storage limitation;
ADR 0031).

Each clinic sets ``inactive_client_years`` (7 by default; null: kept until erased on request).
A client with no activity for that long is erased as on request (:func:`app.privacy.service.
erase`: identity gone, consent withdrawn, the animals' clinical records kept), by the operator's
``vetify retention --apply``. Activity is anything the clinic did with or for them: a change to
them or their pets, a consent given or withdrawn, a visit booked (a future one keeps them
active), a medical record. A client under a legal hold is kept and counted; one already erased
is not looked at again.

It runs like the rest of ``vetify retention``: the clinics and their policies read as the backup
role, the erasures made as the schema's owner a clinic at a time (row-level security holds the
owner to one clinic too), a batch per transaction, each an audited change of the clinic's trail
(action ``job:retention``). Without ``apply`` it only counts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.appointments.models import Appointment
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
    reader, owner = (role_engine(url) for url in (backup_url, owner_url))
    try:
        async with reader.connect() as connection:
            policies = (
                await connection.execute(
                    text(
                        "SELECT id, inactive_client_years FROM clinics"
                        " WHERE inactive_client_years IS NOT NULL ORDER BY id"
                    )
                )
            ).all()
        sessions = async_sessionmaker(owner, expire_on_commit=False)
        found = []
        with context.bound(context.Context(task=TASK)):  # the trail's action: job:retention
            for clinic_id, years in policies:
                cutoff = now - years * YEAR
                result = await _clinic(
                    sessions, storage, clinic_id, years, cutoff, apply=apply, batch=batch
                )
                if result.erased or result.held:
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
    erased = 0
    while True:
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic_id)
            ids = (
                await session.scalars(
                    of_clinic(tenant, Customer)
                    .where(due)
                    .with_only_columns(Customer.id)
                    .order_by(Customer.id)
                    .limit(batch)
                    # Held until erased: a hold or an erasure asked for meanwhile waits, then
                    # sees the erasure. One a request holds now is left for the next run.
                    .with_for_update(skip_locked=True)
                )
            ).all()
            files = []
            for customer_id in ids:
                files += (await service.erase(session, tenant, customer_id, None))[1]
        for key in files:  # after the commit, as the route does
            await storage.delete(key)
        erased += len(ids)
        if len(ids) < batch:
            return Inactive(clinic_id, years, erased, held)


async def _count(session: AsyncSession, tenant: Tenant, where: ColumnElement[bool]) -> int:
    query = (
        select(func.count())
        .select_from(Customer)
        .where(Customer.tenant_id == tenant.clinic_id, where)
    )
    return int(await session.scalar(query) or 0)
