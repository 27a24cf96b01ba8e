from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk


class ScanStatus(StrEnum):
    unscanned = "unscanned"  # scanning is off (no clamd configured)
    pending = "pending"  # stored, not yet scanned: not downloadable
    clean = "clean"
    infected = "infected"  # bytes deleted, row kept as the record of what was refused


class Attachment(TenantScoped, Base):
    """A file attached to a medical record: its bytes live in storage under ``storage_key``.

    ``filename`` is the client's name, sanitised, and only ever shown; ``content_type`` is what
    the bytes were sniffed as; ``size_bytes`` and ``sha256`` are of the file as uploaded (what
    is stored is sealed with the clinic's data key, a little larger). Adding is allowed after
    the record locks (like an addendum); deleting is not (trigger
    ``attachments_record_locked``).
    """

    __tablename__ = "attachments"
    __table_args__ = (tenant_fk("record_id", "medical_records"),)

    record_id: Mapped[uuid.UUID] = mapped_column(index=True)
    uploaded_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    storage_key: Mapped[str] = mapped_column(String(100), unique=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    scan_status: Mapped[ScanStatus] = mapped_column(pg_enum(ScanStatus, "scan_status"))
    scan_signature: Mapped[str | None] = mapped_column(String(200))
    sealed_with: Mapped[int | None]
    """The version of the clinic's data key the stored bytes are sealed with (ADR 0034); null:
    stored in the clear, before files were sealed (``vetify keys rotate-dek`` seals them)."""
