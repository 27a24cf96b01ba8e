from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field, StringConstraints

from app.customers.models import Channel
from app.kit.types import NON_BLANK, TRIM, Input, Output
from app.privacy.models import ExportStatus

Reason = Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=NON_BLANK), TRIM]


class LegalHoldIn(Input):
    reason: Reason = Field(
        description="Why the client's data must be kept for now: a claim, a dispute, an"
        " authority's request. Shown to whoever tries to erase it."
    )


class ErasureOut(Output):
    """What an erasure did, and what it kept."""

    customer_id: uuid.UUID
    erased_at: dt.datetime
    fields_erased: list[str]
    consents_withdrawn: list[Channel]
    appointments_cancelled: list[uuid.UUID]
    """Upcoming appointments of the client's pets, cancelled with their reason and notes."""
    pets_kept: int
    records_kept: int
    """Medical records of the client's pets: kept, as the clinic must, with the owner erased."""
    exports_withdrawn: int
    """Exports of the client not yet downloaded: expired, their files deleted."""


class ClinicExportOut(Output):
    """The whole clinic's export: ``pending`` while the job builds it, then ``ready`` to be
    downloaded once (``GET /api/v1/clinic-exports/{id}/content``) before ``expires_at``."""

    id: uuid.UUID
    requested_by: uuid.UUID
    status: ExportStatus
    created_at: dt.datetime
    expires_at: dt.datetime
    ready_at: dt.datetime | None
    downloaded_at: dt.datetime | None
    size_bytes: int | None


class ExportOut(ClinicExportOut):
    """A client's export: ``pending`` while the job builds it, then ``ready`` to be downloaded
    once (``GET /api/v1/client-exports/{id}/content``) before ``expires_at``."""

    customer_id: uuid.UUID
