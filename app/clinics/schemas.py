from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field

from app.kit.types import (
    INTEGRAL,
    Address,
    Country,
    Email,
    Id,
    Input,
    Name,
    Output,
    Password,
    Phone,
    SecondFactor,
    ShortText,
    TimeZone,
    TimeZoneName,
    omittable,
    second_factor,
)
from app.settings import RECORD_YEARS_MAX


class ClinicOut(Output):
    id: uuid.UUID
    name: str
    timezone: str
    require_mfa: bool
    inactive_client_years: int | None
    country: str | None
    record_retention_years: int | None
    created_at: dt.datetime


Years = Annotated[int, Field(ge=1, le=50), INTEGRAL]
RecordYears = Annotated[int, Field(ge=1, le=RECORD_YEARS_MAX), INTEGRAL]


class ClinicPatch(Input):
    name: Name = omittable()
    timezone: TimeZone = omittable()
    require_mfa: bool = omittable(
        "Every member must log in with a second factor; members who have not"
        " enrolled may only enrol until they do, and their API tokens are refused."
        " A security setting: changing it needs a login session that passed your own second"
        " factor in the last few minutes (step-up).",
    )
    inactive_client_years: Years | None = Field(
        default=None,
        description="Years without activity after which a client's personal data is erased"
        " (their animals' records are kept); null keeps clients until erased on request.",
    )
    country: Country | None = Field(
        default=None,
        description="Where the clinic practises (ISO 3166-1 alpha-2): its law's minimum for"
        " keeping medical records applies. A security setting (step-up).",
    )
    record_retention_years: RecordYears | None = Field(
        default=None,
        description="Years after a patient's last visit that its medical records are kept, then"
        " removed; at least the minimum of the clinic's country; null: that minimum. A security"
        " setting (step-up).",
    )


class LocationIn(Address):
    name: Name
    phone: Phone | None = None


class LocationPatch(Address):
    name: Name = omittable()
    phone: Phone | None = None


class LocationOut(Output):
    id: uuid.UUID
    name: str
    address_line1: str | None
    address_line2: str | None
    city: str | None
    postcode: str | None
    country: str | None
    phone: str | None


class RoomIn(Input):
    location_id: Id
    name: ShortText
    active: bool = True


class RoomPatch(Input):
    name: ShortText = omittable()
    active: bool = omittable()


class RoomOut(Output):
    id: uuid.UUID
    location_id: uuid.UUID
    name: str
    active: bool


class SignupIn(Input):
    clinic_name: Name
    location_name: Name = "Main"
    timezone: TimeZone = TimeZoneName("UTC")
    owner_name: Name
    email: Email
    password: Password
    totp_code: SecondFactor | None = second_factor()


class OpenedClinic(Output):
    id: uuid.UUID
    name: str


class OwnerOut(Output):
    id: uuid.UUID
    email: str
    name: str


class SignupOut(Output):
    clinic: OpenedClinic
    user: OwnerOut
    location_id: uuid.UUID
