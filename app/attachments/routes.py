from __future__ import annotations

import os
import re
import uuid
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status
from starlette.background import BackgroundTask

from app.attachments import service
from app.attachments.models import Attachment
from app.attachments.schemas import AttachmentOut, AttachmentUpload
from app.audit import trail
from app.auth.deps import AppSettings, per_user, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.session import DbSession
from app.kit.downloads import Download, RangeBeyondFile, RangeRefused, download_headers
from app.kit.files import ALLOWED
from app.kit.openapi import multipart_body
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, paginate
from app.kit.problems import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    responses,
)
from app.kit.ratelimit import TooManyRequests
from app.kit.storage import Store, discard
from app.kit.uploads import UnsupportedMediaType
from app.records import service as records

router = APIRouter(prefix="/api/v1", tags=["attachments"])
UPLOAD_PATH = re.compile(r"^/api/v1/medical-records/[^/]+/attachments$")
"""Where bodies may be as large as ``upload_max_bytes`` (app/main.py tells the body limits)."""
Reader = Annotated[Principal, Depends(requires(Action.records_read))]
Writer = Annotated[Principal, Depends(requires(Action.records_write))]
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)


@router.post(
    "/medical-records/{record_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        Unauthenticated,
        Forbidden,
        NotFound,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidInput,
        TooManyRequests,
    ),
    openapi_extra=multipart_body(AttachmentUpload),
    dependencies=[Depends(per_user(lambda q: q.upload))],
    summary="Attach a file (image, PDF, DICOM) to a medical record",
    description="The body is `multipart/form-data` with one field, `file`. The type is read"
    " from the content; anything but PNG, JPEG, GIF, WebP, PDF or DICOM is refused (415), as is"
    " a file over the configured size (413). Files may be added after the record locks.",
)
async def upload_attachment(
    record_id: uuid.UUID,
    request: Request,
    caller: Writer,
    session: DbSession,
    storage: Store,
    settings: AppSettings,
) -> AttachmentOut:
    attachment = await service.upload(
        session, caller, request, storage, settings, record_id, caller.user_id
    )
    return service.to_out(attachment)


@router.get(
    "/medical-records/{record_id}/attachments",
    responses=ONE,
    summary="The files attached to a medical record",
)
async def list_attachments(
    record_id: uuid.UUID,
    caller: Reader,
    session: DbSession,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[AttachmentOut]:
    await records.get(session, caller, record_id)
    rows, next_cursor = await paginate(
        session, service.search(caller, record_id), [Attachment.id], cursor, limit
    )
    return Page[AttachmentOut](items=[service.to_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/attachments/{attachment_id}", responses=ONE, summary="An attachment's metadata")
async def get_attachment(
    attachment_id: uuid.UUID, caller: Reader, session: DbSession
) -> AttachmentOut:
    return service.to_out(await service.get(session, caller, attachment_id))


@router.get(
    "/attachments/{attachment_id}/content",
    response_class=Response,
    responses={
        200: {
            "description": "The file, always as a download (never rendered in our origin)",
            "content": {
                kind.media_type: {"schema": {"type": "string", "format": "binary"}}
                for kind in ALLOWED
            },
            "headers": {
                "Content-Disposition": {"schema": {"type": "string"}},
                "Repr-Digest": {"schema": {"type": "string"}},
            },
        },
        **responses(
            Unauthenticated,
            Forbidden,
            NotFound,
            service.NotScanned,
            service.Infected,
            service.Corrupted,
            InvalidInput,
            RangeRefused,
            RangeBeyondFile,
        ),
    },
    summary="Download an attachment's content",
)
async def download_attachment(
    attachment_id: uuid.UUID, caller: Reader, session: DbSession, storage: Store
) -> Response:
    attachment = await service.get(session, caller, attachment_id)
    copy = await service.fetch(session, caller, storage, attachment)
    trail.read(session, attachment)  # who took which file is part of the clinic's trail
    return Download(
        copy,
        media_type=attachment.content_type,
        headers=download_headers(attachment.filename, attachment.sha256),
        background=BackgroundTask(discard, copy),
        stat_result=await to_thread.run_sync(os.stat, copy),
    )


@router.delete(
    "/attachments/{attachment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(
        Unauthenticated, Forbidden, NotFound, Conflict, records.RecordLocked, InvalidInput
    ),
    summary="Remove an attachment from a record that has not locked yet",
)
async def delete_attachment(
    attachment_id: uuid.UUID,
    caller: Writer,
    session: DbSession,
    storage: Store,
    background: BackgroundTasks,
) -> None:
    key = await service.delete(session, caller, attachment_id)
    # After the response, so after the commit: a failed commit keeps the row and its bytes.
    background.add_task(storage.delete, key)
