from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.audit import service
from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventOut
from app.audit.trail import Change
from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, page
from app.kit.problems import Forbidden, InvalidInput, Unauthenticated, responses
from app.kit.types import Timestamp

router = APIRouter(prefix="/api/v1/audit-events", tags=["audit"])
Auditor = Annotated[Principal, Depends(requires(Action.audit_read))]
Name = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[a-z_.:-]+$")]


@router.get(
    "",
    responses=responses(Unauthenticated, Forbidden, InvalidInput),
    summary="The clinic's audit trail, oldest first",
)
async def list_audit_events(
    caller: Auditor,
    session: DbSession,
    user_id: Annotated[uuid.UUID | None, Query(description="Done by this member")] = None,
    action: Annotated[Name, Query(description="e.g. `records:write`")] = None,
    object_type: Annotated[Name, Query(description="The table, e.g. `medical_records`")] = None,
    object_id: Annotated[uuid.UUID | None, Query()] = None,
    change: Annotated[Change | None, Query()] = None,
    since: Annotated[Timestamp | None, Query(description="At or after this time")] = None,
    until: Annotated[Timestamp | None, Query(description="Before this time")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[AuditEventOut]:
    query = await service.search(
        session,
        caller,
        user_id=user_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        change=change,
        since=since,
        until=until,
    )
    return await page(session, query, AuditEventOut, cursor, limit, order_by=[AuditEvent.seq])
