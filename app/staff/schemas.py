from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from app.auth.models import Role
from app.kit.types import LAX, Email, Input, Output, omittable


class StaffOut(Output):
    user_id: uuid.UUID
    name: str
    email: str
    role: Role
    active: bool


class StaffPatch(Input):
    role: Annotated[Role, LAX] = omittable()
    active: bool = omittable()


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
