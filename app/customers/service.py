"""Pet owners and their communication consent.

A client's email, phone and postal address are sealed together with the clinic's data key
(``customers.contact_sealed``, ADR 0032), and found again by the blind indexes of the email
address and the phone number: a search matches any part of a name, or a whole address or number.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Channel, ConsentEvent, Customer
from app.customers.schemas import CONTACT_FIELDS as CONTACT_FIELDS  # other domains' name
from app.customers.schemas import (
    ConsentOut,
    ConsentsIn,
    ConsentsOut,
    Contact,
    CustomerIn,
    CustomerOut,
    CustomerPatch,
)
from app.db.repository import apply, belongs_to, get_or_404, of_clinic
from app.db.tenancy import Tenant, check_tenant
from app.keys import blind, rotation
from app.keys import service as keys
from app.kit.ids import new_id
from app.kit.problems import Conflict
from app.pets.models import Pet

CONTACT = "customers.contact"
"""What a client's sealed contact details are bound to (with the clinic and the row)."""
rotation.seals(rotation.SealedColumn("customers", "contact_sealed", CONTACT, "tenant_id"))
EMAIL, PHONE = "customers.email", "customers.phone"
"""The fields the blind indexes are of."""
NO_CONTACT = Contact()
SEALED_COLUMNS = ("contact_sealed", "email_index", "phone_index")
"""The columns that keep a client's contact details: sealed, and their blind indexes."""
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


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


async def search(session: AsyncSession, tenant: Tenant, q: str | None) -> Select[Customer]:
    """The clinic's customers; with ``q``, those whose name holds it (any case), or whose email
    address or phone number is it (whole: they are found by their blind index)."""
    query = of_clinic(tenant, Customer)
    if not q:
        return query
    # autoescape: a % or _ typed by the user is a character, not a wildcard
    matches: list[ColumnElement[bool]] = [
        func.lower(Customer.first_name + " " + Customer.last_name).contains(
            q.lower(), autoescape=True
        )
    ]
    email, phone = _email_key(q), _phone_key(q)
    if (email or phone) and (key := await blind.index_key_if_any(session, tenant)):
        if email:
            matches.append(Customer.email_index == blind.index_of(key, EMAIL, email))
        if phone:
            matches.append(Customer.phone_index == blind.index_of(key, PHONE, phone))
    return query.where(or_(*matches))


def _email_key(value: str) -> str | None:
    """What an email address is indexed and searched by: trimmed, in lower case."""
    value = value.strip().lower()
    return value if "@" in value else None


def _phone_key(value: str) -> str | None:
    """What a phone number is indexed and searched by: E.164, as typed with or without spaces,
    dots, dashes or parentheses."""
    value = _PHONE_SEPARATORS.sub("", value)
    return value if _E164.fullmatch(value) else None


async def seal_contact(
    session: AsyncSession, tenant: Tenant, customer: Customer, contact: Contact
) -> None:
    """``contact`` sealed into ``customer`` (whose id is set), with its blind indexes."""
    for column, value in (await _sealed(session, tenant, customer.id, contact)).items():
        setattr(customer, column, value)


async def _sealed(
    session: AsyncSession, tenant: Tenant, customer_id: uuid.UUID, contact: Contact
) -> dict[str, bytes | None]:
    """The columns that keep ``contact``, sealed and indexed. Every read of keys is done before
    the row is touched: a query's autoflush would otherwise write the row twice (two changes in
    the audit trail for one)."""
    scope = keys.scope_of(session, tenant)
    columns: dict[str, bytes | None] = {
        "contact_sealed": None,
        "email_index": None,
        "phone_index": None,
    }
    if contact != NO_CONTACT:
        plain = contact.model_dump_json(exclude_none=True).encode()
        columns["contact_sealed"] = await keys.seal_bytes(
            session, scope, CONTACT, customer_id, plain
        )
    email = contact.email and _email_key(contact.email)
    phone = contact.phone and _phone_key(contact.phone)
    if email or phone:
        key = await blind.index_key(session, tenant)
        if email:
            columns["email_index"] = blind.index_of(key, EMAIL, email)
        if phone:
            columns["phone_index"] = blind.index_of(key, PHONE, phone)
    return columns


async def contact_of(session: AsyncSession, tenant: Tenant, customer: Customer) -> Contact:
    """The customer's contact details, opened (:class:`~app.kit.sealing.Unreadable` if the
    sealed value is not this row's, or its key was shredded)."""
    if customer.contact_sealed is None:
        return NO_CONTACT
    scope = keys.scope_of(session, tenant)
    opened = await keys.unseal_bytes(session, scope, CONTACT, customer.id, customer.contact_sealed)
    return Contact.model_validate_json(opened)


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
    return [
        CustomerOut.model_validate(
            {
                **_columns(c),
                **(await contact_of(session, tenant, c)).model_dump(),
                "consents": by_id[c.id],
            }
        )
        for c in customers
    ]


def _columns(customer: Customer) -> dict[str, object]:
    return {
        column.key: getattr(customer, column.key)
        for column in Customer.__table__.columns
        if column.key not in SEALED_COLUMNS
    }


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
        id=new_id(),
        tenant_id=check_tenant(session, tenant),
        **data.model_dump(exclude={"consents", *CONTACT_FIELDS}),
    )
    contact = Contact.model_validate(data.model_dump(include=set(CONTACT_FIELDS)))
    await seal_contact(session, tenant, customer, contact)
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
    sealed: dict[str, bytes | None] = {}
    if changed := changes.model_dump(exclude_unset=True, include=set(CONTACT_FIELDS)):
        contact = await contact_of(session, tenant, customer)
        if (wanted := contact.model_copy(update=changed)) != contact:
            sealed = await _sealed(session, tenant, customer.id, wanted)
    apply(customer, changes, exclude={"consents", *CONTACT_FIELDS})
    for column, value in sealed.items():
        setattr(customer, column, value)
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
