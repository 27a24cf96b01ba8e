"""Attachments' background work: scanning files whose upload found the scanner down."""

from __future__ import annotations

import logging
import uuid

from procrastinate import RetryStrategy
from procrastinate.job_context import JobContext

from app.attachments import service
from app.db.tenancy import InClinic, enter_tenant
from app.kit.storage import Storage, storage_from
from app.queue import queue, runtime

log = logging.getLogger("vetify.attachments")


@queue.task(
    name=service.SCAN_PENDING,
    queue="scan",
    pass_context=True,
    # 2 s, 4 s ... about 17 minutes over 10 tries; a file still pending after that stays
    # unservable, and an operator sees it in the job table.
    retry=RetryStrategy(max_attempts=10, exponential_wait=2),
)
async def scan_pending(context: JobContext, clinic_id: str, attachment_id: str) -> None:
    vetify = runtime(context)
    storage: Storage = vetify.service("storage", storage_from)
    async with vetify.sessions() as session, session.begin():
        tenant = InClinic(uuid.UUID(clinic_id))
        await enter_tenant(session, tenant.clinic_id)
        infected = await service.scan_pending(
            session, tenant, storage, vetify.settings, uuid.UUID(attachment_id)
        )
    if infected is not None:
        # After the commit: the row says infected (never served) before the bytes go.
        await storage.delete(infected)
