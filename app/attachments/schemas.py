from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field

from app.attachments.models import ScanStatus
from app.kit.types import Output


class AttachmentUpload(BaseModel):
    """The multipart/form-data form (documentation only: the body is parsed as it streams)."""

    model_config = ConfigDict(extra="forbid", title="AttachmentUpload")

    file: bytes = Field(
        description="PNG, JPEG, GIF, WebP, PDF or DICOM, decided from the bytes alone; the"
        " part's file name is kept (sanitised) as the attachment's name."
    )


class AttachmentOut(Output):
    id: uuid.UUID
    record_id: uuid.UUID
    uploaded_by: uuid.UUID
    filename: str
    content_type: str = Field(description="What the bytes are, sniffed; not what was declared")
    size_bytes: int
    sha256: str = Field(description="SHA-256 of the content, hex; checked on every download")
    scan_status: ScanStatus
    scan_signature: str | None
    created_at: dt.datetime
