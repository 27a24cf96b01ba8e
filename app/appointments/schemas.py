from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from app.appointments.models import Status
from app.kit.types import (
    INTEGRAL,
    LAX,
    Id,
    Input,
    LongText,
    Output,
    ShortText,
    Timestamp,
    omittable,
)

Reason = Annotated[str, StringConstraints(max_length=500)]


class AppointmentTypeIn(Input):
    name: ShortText
    default_duration_minutes: Annotated[int, Field(ge=5, le=24 * 60), INTEGRAL]


class AppointmentTypePatch(Input):
    name: ShortText = omittable()
    default_duration_minutes: Annotated[int, Field(ge=5, le=24 * 60), INTEGRAL] = omittable()


class AppointmentTypeOut(Output):
    id: uuid.UUID
    name: str
    default_duration_minutes: int


HORIZON = "Within the service's horizon of now, before or after (two years unless configured)"


class AppointmentIn(Input):
    pet_id: Id
    vet_id: Id
    room_id: Id | None = None
    appointment_type_id: Id | None = None
    starts_at: Timestamp = Field(description=HORIZON)
    ends_at: Timestamp | None = Field(
        default=None,
        description=f"Defaults to start + the appointment type's duration. {HORIZON}",
    )
    reason: Reason | None = None
    notes: LongText | None = None


class AppointmentPatch(Input):
    """Reschedule or reassign; only while scheduled or confirmed."""

    vet_id: Id = omittable()
    room_id: Id | None = None
    starts_at: Timestamp = omittable(HORIZON)
    ends_at: Timestamp = omittable(HORIZON)
    reason: Reason | None = None
    notes: LongText | None = None


class StatusIn(Input):
    status: Annotated[Status, LAX]


class AppointmentOut(Output):
    id: uuid.UUID
    pet_id: uuid.UUID
    vet_id: uuid.UUID
    room_id: uuid.UUID | None
    appointment_type_id: uuid.UUID | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: Status
    reason: str | None
    notes: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
