from __future__ import annotations

import uuid
from typing import Annotated

from app.auth.models import Role
from app.kit.types import LAX, Input, Output, omittable


class StaffOut(Output):
    user_id: uuid.UUID
    name: str
    email: str
    role: Role
    active: bool


class StaffPatch(Input):
    role: Annotated[Role, LAX] = omittable()
    active: bool = omittable()
