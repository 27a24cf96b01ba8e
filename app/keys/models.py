"""The data keys' table (migration 0012, ADR 0028)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class DataKey(Base):
    """One version of a scope's data key, wrapped (never stored in the clear). A scope is a
    clinic's id or ``platform`` (rows no clinic owns: users). Versions only grow; a value names
    the version that sealed it. The service may read and add keys; only ``vetify keys``, as the
    schema's owner, wraps them again, and deleting a scope's keys shreds what they sealed.

    Not under row-level security: a wrapped key opens only with a key-encryption key, which the
    process holds for every clinic alike, and the wrapping names its scope (a key moved to
    another clinic does not unwrap)."""

    __tablename__ = "data_keys"

    scope: Mapped[str] = mapped_column(String(36), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    kek_id: Mapped[str] = mapped_column(String(300))
    """Which key-encryption key wrapped it: ``local:<id>`` or ``aws-kms:<key arn>``."""
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
