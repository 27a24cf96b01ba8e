"""Data protection's background work: building a client's export, and deleting its file when
it expires (ADR 0030)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from procrastinate import RetryStrategy
from procrastinate.job_context import JobContext

from app.db.tenancy import InClinic, enter_tenant
from app.kit.storage import Storage, storage_from
from app.privacy import exports
from app.queue import queue, runtime

log = logging.getLogger("vetify.privacy")

RETRIES = 6
"""After the first try: 2 s, 4 s ... about 2 minutes in all (storage or the database away);
then the export says ``failed`` and the clinic asks for another."""


@queue.task(
    name=exports.BUILD,
    queue="exports",
    pass_context=True,
    retry=RetryStrategy(max_attempts=RETRIES, exponential_wait=2),
)
async def build_export(context: JobContext, clinic_id: str, export_id: str) -> None:
    vetify = runtime(context)
    storage: Storage = vetify.service("storage", storage_from)
    tenant = InClinic(uuid.UUID(clinic_id))
    valid = dt.timedelta(hours=vetify.settings.export_valid_hours)
    try:
        await exports.build(vetify.sessions, tenant, storage, uuid.UUID(export_id), valid)
    except Exception:
        if context.job is not None and context.job.attempts >= RETRIES:
            log.exception("export %s failed for good", export_id)
            async with vetify.sessions() as session, session.begin():
                await enter_tenant(session, tenant.clinic_id)
                await exports.failed(session, tenant, uuid.UUID(export_id))
        raise


@queue.task(
    name=exports.EXPIRE,
    queue="exports",
    pass_context=True,
    retry=RetryStrategy(max_attempts=RETRIES, exponential_wait=2),
)
async def expire_export(
    context: JobContext, clinic_id: str, export_id: str, storage_key: str
) -> None:
    vetify = runtime(context)
    storage: Storage = vetify.service("storage", storage_from)
    tenant = InClinic(uuid.UUID(clinic_id))
    async with vetify.sessions() as session, session.begin():
        await enter_tenant(session, tenant.clinic_id)
        await exports.expire(session, tenant, uuid.UUID(export_id))
    # Whatever became of it (downloaded, erased): its file goes now, if it was not gone already.
    await storage.delete(storage_key)
