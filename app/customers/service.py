"""Pet owners and their communication consent."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Channel, ConsentEvent, Customer
from app.customers.schemas import (
    ConsentOut,
    ConsentsIn,
    ConsentsOut,
    CustomerIn,
    CustomerOut,
    CustomerPatch,
)
from app.db.repository import apply, belongs_to, get_or_404, of_clinic
from app.db.tenancy import Tenant, check_tenant
from app.kit.problems import Conflict
from app.pets.models import Pet


class CustomerErased(Conflict):
    slug, title = "customer-erased", "Customer erased"

    def __init__(self, erased_at: dt.datetime) -> None:
        super().__init__(
            f"The customer's personal data was erased on {erased_at:%Y-%m-%d};"
            " it cannot be changed or given back. Add the person as a new customer if they return."
        )


class LegalHold(Conflict):
    slug, title = "legal-hold", "Under a legal hold"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The customer's data is under a legal hold ({reason}); lift the hold before"
            " erasing or deleting it."
        )


async def get_to_change(session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID) -> Customer:
    """The customer, locked until the transaction ends, refused once erased. Every change takes
    it so: a change that read the row before an erasure committed would otherwise write its
    values over the erased ones."""
    customer = await get_or_404(session, tenant, Customer, customer_id, "customer", lock=True)
    if customer.erased_at is not None:
        raise CustomerErased(customer.erased_at)
    return customer


def search(tenant: Tenant, q: str | None) -> Select[Customer]:
    query = of_clinic(tenant, Customer)
    if q:
        needle = q.lower()
        query = query.where(
            or_(
                # autoescape: a % or _ typed by the user is a character, not a wildcard
                func.lower(Customer.first_name + " " + Customer.last_name).contains(
                    needle, autoescape=True
                ),
                func.lower(Customer.email).contains(needle, autoescape=True),
                Customer.phone.contains(q, autoescape=True),
            )
        )
    return query


async def consents(
    session: AsyncSession, tenant: Tenant, customer_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, ConsentsOut]:
    """The consent in force per channel: the newest event of each (customer, channel)."""
    check_tenant(session, tenant)
    result: dict[uuid.UUID, ConsentsOut] = {cid: ConsentsOut() for cid in customer_ids}
    if not customer_ids:
        return result
    latest = await session.scalars(
        of_clinic(tenant, ConsentEvent)
        .where(ConsentEvent.customer_id.in_(customer_ids))
        .ext(distinct_on(ConsentEvent.customer_id, ConsentEvent.channel))
        .order_by(ConsentEvent.customer_id, ConsentEvent.channel, ConsentEvent.id.desc())
    )
    for event in latest:
        setattr(
            result[event.customer_id],
            event.channel.value,
            ConsentOut(granted=event.granted, changed_at=event.recorded_at),
        )
    return result


async def to_out(
    session: AsyncSession, tenant: Tenant, customers: Sequence[Customer]
) -> list[CustomerOut]:
    by_id = await consents(session, tenant, [c.id for c in customers])
    return [CustomerOut.model_validate({**_columns(c), "consents": by_id[c.id]}) for c in customers]


def _columns(customer: Customer) -> dict[str, object]:
    return {column.key: getattr(customer, column.key) for column in Customer.__table__.columns}


async def _record_consents(
    session: AsyncSession,
    tenant: Tenant,
    customer_id: uuid.UUID,
    wanted: ConsentsIn,
    by: uuid.UUID | None,
) -> None:
    current = (await consents(session, tenant, [customer_id]))[customer_id]
    for channel, granted in wanted.model_dump(exclude_unset=True).items():
        in_force = getattr(current, channel)
        if in_force is None or in_force.granted != granted:
            session.add(
                ConsentEvent(
                    tenant_id=tenant.clinic_id,
                    customer_id=customer_id,
                    channel=Channel(channel),
                    granted=granted,
                    recorded_by=by,
                )
            )


async def withdraw_consents(
    session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID, by: uuid.UUID | None
) -> list[Channel]:
    """Every consent in force withdrawn (an event added per channel): the channels it was."""
    in_force = (await consents(session, tenant, [customer_id]))[customer_id]
    granted = [c for c in Channel if (now := getattr(in_force, c.value)) and now.granted]
    wanted = ConsentsIn.model_validate({channel.value: False for channel in granted})
    await _record_consents(session, tenant, customer_id, wanted, by)
    return granted


async def create(
    session: AsyncSession, tenant: Tenant, data: CustomerIn, by: uuid.UUID
) -> Customer:
    customer = Customer(
        tenant_id=check_tenant(session, tenant), **data.model_dump(exclude={"consents"})
    )
    session.add(customer)
    await session.flush()
    if data.consents is not None:
        await _record_consents(session, tenant, customer.id, data.consents, by)
        await session.flush()
    return customer


async def update(
    session: AsyncSession,
    tenant: Tenant,
    customer_id: uuid.UUID,
    changes: CustomerPatch,
    by: uuid.UUID,
) -> Customer:
    customer = await get_to_change(session, tenant, customer_id)
    apply(customer, changes, exclude={"consents"})
    if "consents" in changes.model_fields_set:
        await _record_consents(session, tenant, customer.id, changes.consents, by)
    await session.flush()
    return customer


async def delete(session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID) -> None:
    # Locked, as an erasure takes it: a hold set meanwhile is seen. An erased customer (an
    # anonymous row) may still be deleted once they have no pets.
    customer = await get_or_404(session, tenant, Customer, customer_id, "customer", lock=True)
    if customer.legal_hold is not None:
        raise LegalHold(customer.legal_hold)
    pets = exists().where(belongs_to(tenant, Pet), Pet.customer_id == customer_id)
    if await session.scalar(select(pets)):
        raise Conflict("The customer still has pets; delete or move them first.")
    await session.delete(customer)
    await session.flush()
