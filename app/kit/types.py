"""Building blocks for API schemas: strict by default, every string bounded.

FastAPI validates parsed JSON in Python mode, where pydantic's strict mode would refuse a UUID
or a timestamp given as a string. Those types are therefore lax, but only for strings: a
number is never taken as a date and ``false`` is never taken as anything but a boolean.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
)


def _only_strings(value: Any) -> Any:
    if isinstance(value, str | uuid.UUID | dt.date):
        return value
    raise ValueError("must be a string")


def _in_sane_range(value: dt.datetime) -> dt.datetime:
    if not 1900 <= value.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return value


def _date_in_range(value: dt.date) -> dt.date:
    if not 1900 <= value.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return value


LAX = Field(strict=False)
"""For enums in request bodies: strict mode would want an enum instance, JSON has strings."""

Id = Annotated[uuid.UUID, BeforeValidator(_only_strings), Field(strict=False)]
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_only_strings),
    AfterValidator(_in_sane_range),
    Field(strict=False),
]
Date = Annotated[
    dt.date, BeforeValidator(_only_strings), AfterValidator(_date_in_range), Field(strict=False)
]


# Names and labels are trimmed and must not be blank; free text may be empty.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
Phone = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$", max_length=16)]
"""E.164: a plus sign and up to 15 digits."""


def _known_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Lisbon") from exc
    return value


TimeZone = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_known_zone)
]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$", max_length=5)]
"""BCP 47 language tag, language and optional region (``en``, ``pt-BR``)."""


def omittable() -> Any:
    """For PATCH fields that may be left out but not set to null (non-nullable columns).

    The default is not validated, so leaving the field out is fine, while an explicit
    ``null`` fails validation; the schema says exactly that (not required, not nullable).
    """
    return Field(default=None)


class Input(BaseModel):
    """Request bodies: strict types, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", str_max_length=20_000)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold U+0000; refuse it here as a 422, not a 500 at INSERT.
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("must not contain the NUL character")
        return value


class Output(BaseModel):
    """Response bodies, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)
