from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from app.auth.models import Role
from app.kit.types import (
    INTEGRAL,
    LAX,
    Email,
    Id,
    Input,
    Name,
    Output,
    ShortText,
    TimeZone,
    TimeZoneName,
)

# Long enough to resist guessing, short enough to bound argon2's work per request.
Password = Annotated[str, StringConstraints(min_length=12, max_length=128)]
Credential = Annotated[str, StringConstraints(min_length=40, max_length=200)]


class SignupIn(Input):
    clinic_name: Name
    location_name: Name = "Main"
    timezone: TimeZone = TimeZoneName("UTC")
    owner_name: Name
    email: Email
    password: Password


class LoginIn(Input):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    clinic_id: Id | None = Field(
        default=None, description="Which clinic to act in; needed when you work for several"
    )


class SwitchClinicIn(Input):
    clinic_id: Id


class UserOut(Output):
    id: uuid.UUID
    email: str
    name: str


class ClinicRef(Output):
    id: uuid.UUID
    name: str


class SignupOut(Output):
    clinic: ClinicRef
    user: UserOut
    location_id: uuid.UUID


class JoinedOut(Output):
    clinic: ClinicRef
    user: UserOut
    role: Role


class SessionOut(Output):
    """The caller: who, in which clinic, with which role."""

    user: UserOut
    clinic: ClinicRef
    role: Role
    expires_at: dt.datetime | None = None


class TokenIn(Input):
    name: ShortText
    expires_in_days: Annotated[int, Field(ge=1, le=3650), INTEGRAL] | None = Field(
        default=None, description="Defaults to the service's setting (90 days)"
    )


class TokenOut(Output):
    id: uuid.UUID
    name: str | None
    created_at: dt.datetime
    expires_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown once. Send as `Authorization: Bearer <token>`.")


class InvitationIn(Input):
    email: Email
    role: Annotated[Role, LAX]


class InvitationOut(Output):
    id: uuid.UUID
    email: str
    role: Role
    expires_at: dt.datetime
    accepted_at: dt.datetime | None
    revoked_at: dt.datetime | None


class InvitationCreated(InvitationOut):
    invite_url: str = Field(
        description="Give this link to the invitee (email delivery comes later)"
    )


class AcceptInvitationIn(Input):
    token: Credential
    name: Name | None = Field(default=None, description="Required for a new account")
    password: Password
