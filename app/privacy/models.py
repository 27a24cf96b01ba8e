from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk, tenant_key


class ExportStatus(StrEnum):
    pending = "pending"  # the job is building it
    ready = "ready"  # sealed in storage, to be downloaded once
    downloaded = "downloaded"
    expired = "expired"  # not downloaded in time, or its client erased: the file is deleted
    failed = "failed"


class ClientExport(TenantScoped, Base):
    """A client's data as one archive (access and portability, GDPR arts. 15 and 20), or, with
    no ``customer_id``, the whole clinic's (its exit, ADR 0036): built by a job, stored sealed
    with the clinic's key, downloaded once before it expires."""

    __tablename__ = "client_exports"
    __table_args__ = (
        tenant_key(),
        tenant_fk("customer_id", "customers", ondelete="CASCADE"),
        CheckConstraint(
            "status NOT IN ('ready', 'downloaded') OR storage_key IS NOT NULL",
            name="built_has_file",
        ),
    )

    customer_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    requested_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    status: Mapped[ExportStatus] = mapped_column(
        pg_enum(ExportStatus, "export_status"), default=ExportStatus.pending
    )
    expires_at: Mapped[dt.datetime]
    ready_at: Mapped[dt.datetime | None]
    downloaded_at: Mapped[dt.datetime | None]
    storage_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """Of the archive as downloaded (the stored file is sealed, a little larger)."""
    sha256: Mapped[str | None] = mapped_column(String(64))
    sealed_with: Mapped[int | None]
    """The version of the clinic's data key the stored file is sealed with (null before
    migration 0021 recorded it: read from the file's header)."""
