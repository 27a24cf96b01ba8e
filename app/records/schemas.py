from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.kit.types import (
    INTEGRAL,
    Date,
    Id,
    Input,
    Kilograms,
    Name,
    Output,
    PastTimestamp,
    ShortText,
    omittable,
)

Soap = Annotated[str, StringConstraints(max_length=20_000)]
TEN_YEARS = dt.timedelta(days=3653)
"""How far from a dose its lot's expiry and the next dose may be: no vaccine plans further."""


class Vitals(Input):
    weight_kg: Kilograms | None = None
    temperature_c: float | None = Field(default=None, ge=20, le=50)
    heart_rate_bpm: Annotated[int, Field(ge=1, le=1000), INTEGRAL] | None = None
    respiratory_rate_bpm: Annotated[int, Field(ge=1, le=500), INTEGRAL] | None = None


class VaccinationIn(Input):
    vaccine: Name
    lot: ShortText | None = None
    # Before the dates checked against it (pydantic validates fields in this order).
    given_at: PastTimestamp = Field(description="Not in the future")
    expiry_date: Date | None = Field(
        default=None, description="The lot's; within ten years of given_at"
    )
    next_due: Date | None = Field(
        default=None, description="Not before given_at, and within ten years of it"
    )

    @field_validator("expiry_date", "next_due")
    @classmethod
    def _near_the_dose(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        given: dt.datetime | None = info.data.get("given_at")
        if value is None or given is None:  # a refused given_at is reported once, on itself
            return value
        if info.field_name == "next_due" and value < given.date():
            raise ValueError("must not be before given_at")
        if abs(value - given.date()) > TEN_YEARS:
            raise ValueError("must be within ten years of given_at")
        return value


class PrescriptionIn(Input):
    drug: Name
    dose: ShortText
    frequency: ShortText
    duration_days: Annotated[int, Field(ge=1, le=3650), INTEGRAL] | None = None
    instructions: Annotated[str, StringConstraints(max_length=2000)] | None = None


class RecordIn(Vitals):
    pet_id: Id
    appointment_id: Id | None = None
    visited_at: PastTimestamp | None = Field(
        default=None, description="Defaults to now; not in the future"
    )
    subjective: Soap = ""
    objective: Soap = ""
    assessment: Soap = ""
    plan: Soap = ""
    vaccinations: Annotated[list[VaccinationIn], Field(max_length=50)] = []
    prescriptions: Annotated[list[PrescriptionIn], Field(max_length=50)] = []


class RecordPatch(Vitals):
    """Until the record locks (24 h after signing). Lists given replace the record's lists."""

    visited_at: PastTimestamp = omittable("Not in the future")
    subjective: Soap = omittable()
    objective: Soap = omittable()
    assessment: Soap = omittable()
    plan: Soap = omittable()
    vaccinations: Annotated[list[VaccinationIn], Field(max_length=50)] = omittable()
    prescriptions: Annotated[list[PrescriptionIn], Field(max_length=50)] = omittable()


class AddendumIn(Input):
    text: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class VaccinationOut(Output):
    id: uuid.UUID
    vaccine: str
    lot: str | None
    expiry_date: dt.date | None
    given_at: dt.datetime
    next_due: dt.date | None


class PrescriptionOut(Output):
    id: uuid.UUID
    drug: str
    dose: str
    frequency: str
    duration_days: int | None
    instructions: str | None


class AddendumOut(Output):
    id: uuid.UUID
    author_id: uuid.UUID
    text: str
    created_at: dt.datetime


class Notes(BaseModel):
    """A record's SOAP notes: what ``medical_records.notes_sealed`` holds, sealed (ADR 0033)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subjective: str = ""
    objective: str = ""
    assessment: str = ""
    plan: str = ""


NOTES_FIELDS = frozenset(Notes.model_fields)


class RecordOut(Output):
    id: uuid.UUID
    pet_id: uuid.UUID
    appointment_id: uuid.UUID | None
    author_id: uuid.UUID
    visited_at: dt.datetime
    subjective: str
    objective: str
    assessment: str
    plan: str
    weight_kg: float | None
    temperature_c: float | None
    heart_rate_bpm: int | None
    respiratory_rate_bpm: int | None
    signed_by: uuid.UUID | None
    signed_at: dt.datetime | None
    locks_at: dt.datetime | None
    locked: bool
    vaccinations: list[VaccinationOut]
    prescriptions: list[PrescriptionOut]
    addenda: list[AddendumOut]
    created_at: dt.datetime
    updated_at: dt.datetime
