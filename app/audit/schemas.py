from __future__ import annotations

import datetime as dt
import uuid

from pydantic import Field, field_validator

from app.kit.types import Output


class AuditEventOut(Output):
    """One event of the clinic's audit trail: who did what to which object, when and from
    where. ``hash`` and ``prev_hash`` (hex) let a reader check the chain themselves (ADR 0027)."""

    seq: int = Field(description="The event's place in the clinic's trail: 1, 2, 3...")
    occurred_at: dt.datetime
    user_id: uuid.UUID | None
    credential_id: uuid.UUID | None
    role: str | None
    action: str = Field(
        description="The permission the route performed (`pets:write`), `job:<task>` for a"
        " background job's work, or `system`"
    )
    object_type: str = Field(description="The table of the object changed")
    object_id: uuid.UUID | None
    change: str = Field(
        description="`insert`, `update`, `delete`, `read` (clinical data opened), or `security`"
        " (a log-in, a refusal, a token made...: `event` and `outcome` say which)"
    )
    fields: list[str] = Field(description="The names of the fields written, never their values")
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    job_id: int | None
    event: str | None = Field(
        description="A security event's name (`login_succeeded`, `permission_denied`...), else null"
    )
    outcome: str | None = Field(
        description="What came of a security event (`succeeded`, `refused`...), else null"
    )
    prev_hash: str = Field(description="The event before it's `hash` (64 zeros for the first)")
    hash: str = Field(description="SHA-256 over `prev_hash` and the event (ADR 0027), in hex")

    @field_validator("prev_hash", "hash", mode="before")
    @classmethod
    def _hex(cls, value: object) -> object:
        return value.hex() if isinstance(value, bytes) else value
