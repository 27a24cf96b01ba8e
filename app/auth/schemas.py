from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from app.auth.models import Role
from app.kit.types import (
    INTEGRAL,
    Email,
    Id,
    Input,
    Name,
    Output,
    Password,
    SecondFactor,
    ShortText,
    second_factor,
)

Credential = Annotated[str, StringConstraints(min_length=40, max_length=200)]


class LoginIn(Input):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    totp_code: SecondFactor | None = second_factor()
    clinic_id: Id | None = Field(
        default=None, description="Which clinic to act in; needed when you work for several"
    )


class SwitchClinicIn(Input):
    clinic_id: Id


class UserOut(Output):
    id: uuid.UUID
    email: str
    name: str
    email_verified_at: dt.datetime | None = Field(
        default=None,
        description="When you proved the address (POST /api/v1/auth/verify-email); until then"
        " you may not invite staff or start paying",
    )


class ClinicRef(Output):
    id: uuid.UUID
    name: str


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
    csrf_token: str | None = Field(
        default=None,
        description="When a session starts: send it as `X-CSRF-Token` with every POST, PUT,"
        " PATCH and DELETE made with the session cookie (also in the `vetify_csrf` cookie)",
    )
    mfa_enrolment_required: bool = Field(
        default=False,
        description="The clinic requires multi-factor authentication and you have not enrolled:"
        " until you do, this session may only see who you are, enrol and log out",
    )


class SecondFactorIn(Input):
    code: SecondFactor


class TotpCodeIn(Input):
    code: Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$", min_length=6, max_length=6)]


class TotpEnrolment(Output):
    secret: str = Field(description="Base32; shown once. Enter it in an authenticator app.")
    provisioning_uri: str = Field(description="The same as an `otpauth://` URI (for a QR code)")


class RecoveryCodesOut(Output):
    recovery_codes: list[str] = Field(
        description="Shown once. Each logs in once in place of a code; new ones replace them."
    )


class MfaEnabledOut(SessionOut):
    """Multi-factor is on; the session was replaced (new cookie) and recovery codes made."""

    recovery_codes: list[str] = Field(description="Shown once. Each logs in once.")


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


class AcceptInvitationIn(Input):
    token: Credential
    name: Name | None = Field(default=None, description="Required for a new account")
    password: Password
    totp_code: SecondFactor | None = second_factor()
