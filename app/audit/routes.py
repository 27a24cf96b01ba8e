from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select

from app.audit import export, service, trail
from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventOut
from app.audit.trail import Change
from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.session import DbSession, DbSessions
from app.kit.clock import utcnow
from app.kit.downloads import download_headers
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, page
from app.kit.problems import Forbidden, InvalidInput, Unauthenticated, responses
from app.kit.types import Timestamp

router = APIRouter(prefix="/api/v1/audit-events", tags=["audit"])
Auditor = Annotated[Principal, Depends(requires(Action.audit_read))]
Name = Annotated[str | None, Query(min_length=1, max_length=100, pattern=r"^[a-z_.:-]+$")]


class Filters(BaseModel):
    """What the list and the export are narrowed by: the same query parameters for both."""

    user_id: Annotated[uuid.UUID | None, Query(description="Done by this member")] = None
    action: Annotated[Name, Query(description="e.g. `records:write`")] = None
    object_type: Annotated[Name, Query(description="The table, e.g. `medical_records`")] = None
    object_id: Annotated[uuid.UUID | None, Query()] = None
    change: Annotated[Change | None, Query()] = None
    since: Annotated[Timestamp | None, Query(description="At or after this time")] = None
    until: Annotated[Timestamp | None, Query(description="Before this time")] = None


Filtered = Annotated[Filters, Query()]


async def _search(session: DbSession, caller: Principal, filters: Filters) -> Select[AuditEvent]:
    return await service.search(session, caller, **dict(filters))


@router.get(
    "",
    responses=responses(Unauthenticated, Forbidden, InvalidInput),
    summary="The clinic's audit trail, oldest first",
)
async def list_audit_events(
    caller: Auditor,
    session: DbSession,
    filters: Filtered,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[AuditEventOut]:
    query = await _search(session, caller, filters)
    return await page(session, query, AuditEventOut, cursor, limit, order_by=[AuditEvent.seq])


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The events the list would show for the same filters, oldest first,"
            " as a download: CSV (a header line; a cell that would start a spreadsheet formula"
            " is led by `'`) or JSON Lines (each line an event as the list shows it, exactly)",
            "content": {
                media: {"schema": {"type": "string"}} for media in export.MEDIA_TYPES.values()
            },
            "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
        },
        **responses(Unauthenticated, Forbidden, InvalidInput),
    },
    summary="The clinic's audit trail as a file (CSV or JSON Lines), oldest first",
)
async def export_audit_events(
    caller: Auditor,
    session: DbSession,
    sessions: DbSessions,
    filters: Filtered,
    format: Annotated[
        export.ExportFormat, Query(description="`csv` (the default) or `jsonl` (JSON Lines)")
    ] = export.ExportFormat.csv,
) -> StreamingResponse:
    """The trail as it stood when asked for, however long the file takes to send; the export
    is noted in it as the next event (a `read` of `audit_events`)."""
    # Streamed from transactions of its own after this request's has committed (app.audit.export).
    query = await _search(session, caller, filters)
    last = await service.last_seq(session, caller)
    trail.exported(session, caller.clinic_id)
    taken = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        export.encoded(format, export.events(sessions, caller.clinic_id, query, last)),
        media_type=export.MEDIA_TYPES[format],  # (Starlette adds text/csv's charset=utf-8)
        headers=download_headers(f"audit-{caller.clinic_id}-{taken}.{format.value}"),
    )
