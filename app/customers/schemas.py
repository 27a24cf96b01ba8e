from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict

from app.kit.types import Address, Email, Language, Name, Output, Phone, omittable


class ConsentsIn(BaseModel):
    """Consent per channel: true gives it, false withdraws it, absent leaves it as it is."""

    model_config = ConfigDict(strict=True, extra="forbid")

    email: bool = omittable()
    whatsapp: bool = omittable()
    sms: bool = omittable()


class ConsentOut(BaseModel):
    granted: bool
    changed_at: dt.datetime


class ConsentsOut(BaseModel):
    email: ConsentOut | None = None
    whatsapp: ConsentOut | None = None
    sms: ConsentOut | None = None


class Contact(BaseModel):
    """A client's contact details: what ``customers.contact_sealed`` holds, sealed (ADR 0032).
    Validated on the way in by :class:`CustomerIn` and :class:`CustomerPatch`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str | None = None
    phone: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    postcode: str | None = None
    country: str | None = None


CONTACT_FIELDS = frozenset(Contact.model_fields)


class CustomerIn(Address):
    first_name: Name
    last_name: Name
    email: Email | None = None
    phone: Phone | None = None
    preferred_language: Language = "en"
    consents: ConsentsIn | None = None


class CustomerPatch(Address):
    first_name: Name = omittable()
    last_name: Name = omittable()
    email: Email | None = None
    phone: Phone | None = None
    preferred_language: Language = omittable()
    consents: ConsentsIn = omittable()


class CustomerOut(Output):
    id: uuid.UUID
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    postcode: str | None
    country: str | None
    preferred_language: str
    consents: ConsentsOut
    erased_at: dt.datetime | None
    legal_hold: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
