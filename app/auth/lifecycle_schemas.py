"""Request and response bodies of the account lifecycle routes (``lifecycle_routes.py``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from app.kit.types import Email, Input, Output, Password, SecondFactor, second_factor

LinkToken = Annotated[
    str, StringConstraints(min_length=40, max_length=100, pattern=r"^vt[vr]_[A-Za-z0-9_-]+$")
]
"""The secret of a mailed link (``vtv_...`` verifies an address, ``vtr_...`` resets)."""


class VerifyEmailIn(Input):
    token: LinkToken = Field(description="From the link mailed to your address")


class PasswordResetIn(Input):
    email: Email


class PasswordResetCompleteIn(Input):
    token: LinkToken = Field(description="From the link mailed to your address")
    password: Password = Field(description="The new password")


class PasswordChangeIn(Input):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    new_password: Password
    totp_code: SecondFactor | None = second_factor()


class Accepted(Output):
    detail: str
