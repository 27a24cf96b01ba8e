from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.kit.types import (
    LAX,
    Id,
    Input,
    Kilograms,
    Name,
    Output,
    PastDate,
    PastTimestamp,
    ShortText,
    omittable,
)
from app.pets.models import Sex, Species

Microchip = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{9,15}$")]
"""ISO 11784 chips are 15 digits; older ones 9-10 alphanumerics."""
Alerts = Annotated[list[Name], Field(max_length=50)]
BORN = "Not after today"


class PetIn(Input):
    customer_id: Id
    name: ShortText
    species: Annotated[Species, LAX]
    breed: ShortText | None = None
    sex: Annotated[Sex, LAX] = Sex.unknown
    neutered: bool = False
    date_of_birth: PastDate | None = Field(default=None, description=BORN)
    microchip: Microchip | None = None
    alerts: Alerts = []


class PetPatch(Input):
    customer_id: Id = omittable()
    name: ShortText = omittable()
    species: Annotated[Species, LAX] = omittable()
    breed: ShortText | None = None
    sex: Annotated[Sex, LAX] = omittable()
    neutered: bool = omittable()
    date_of_birth: PastDate | None = Field(default=None, description=BORN)
    microchip: Microchip | None = None
    alerts: Alerts = omittable()
    deceased: bool = omittable()


class _PetColumns(BaseModel):
    """A pet's columns as the API shows them, all but its alerts (stored sealed)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    customer_id: uuid.UUID
    name: str
    species: Species
    breed: str | None
    sex: Sex
    neutered: bool
    date_of_birth: dt.date | None
    microchip: str | None
    deceased: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class PetOut(Output, _PetColumns):
    alerts: list[str]


class PetStored(_PetColumns):
    """A pet's columns as stored, its alerts still sealed: the columns a list reads, a page of
    rows straight from the database that :func:`app.pets.service.to_out` makes answers of.
    Never an answer itself (not an ``Output``)."""

    alerts_sealed: bytes | None


class WeightIn(Input):
    weight_kg: Kilograms
    measured_at: PastTimestamp | None = Field(
        default=None, description="Defaults to now; not in the future"
    )


class WeightOut(Output):
    id: uuid.UUID
    weight_kg: float
    measured_at: dt.datetime
