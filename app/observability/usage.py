"""The ``clinic_usage`` table, and the flush that adds each process's counts to it (ADR 0026).

Every process counts in memory (:class:`app.kit.usage.Usage`) and adds its counts here every
``VETIFY_USAGE_FLUSH_SECONDS`` and when it stops: one upsert that *adds*, so the counts of
several workers and replicas sum. A failed flush keeps its counts for the next try; a crash
loses at most one interval of one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid

from sqlalchemy import BigInteger, Date, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.kit.usage import Usage
from app.settings import Settings

log = logging.getLogger("vetify.usage")

STOP_SHARE = 0.05
"""Of ``VETIFY_SHUTDOWN_TIMEOUT_SECONDS``, what the last flush may take as a process stops (after
the requests' and the jobs' shares, app/kit/lifecycle.py)."""


class ClinicUsage(Base):
    """Requests and job runs per clinic per UTC day: operators' data for cost monitoring.

    Global (no row-level security; the service role writes many clinics' rows in one statement
    and no route reads it), and no foreign key to ``clinics``: what a clinic cost outlives it,
    and a flush must not fail for a clinic deleted since its requests."""

    __tablename__ = "clinic_usage"

    clinic_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, server_default="0")
    jobs: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    """The last flush that added to the row."""


async def flush(engine: AsyncEngine, usage: Usage) -> int:
    """Add ``usage``'s counts to the table; the number of clinic-days written. On any failure
    the counts go back to ``usage`` (with what was counted meanwhile) and the error is raised."""
    taken = usage.take()
    if not taken:
        return 0
    rows = [
        {"clinic_id": clinic_id, "day": day, "requests": counts.requests, "jobs": counts.jobs}
        for (clinic_id, day), counts in taken.items()
    ]
    statement = insert(ClinicUsage).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=[ClinicUsage.clinic_id, ClinicUsage.day],
        set_={
            "requests": ClinicUsage.requests + statement.excluded.requests,
            "jobs": ClinicUsage.jobs + statement.excluded.jobs,
            "updated_at": func.now(),
        },
    )
    try:
        async with engine.begin() as connection:
            await connection.execute(statement)
    except BaseException:  # cancelled too: a stop in the middle must not lose them
        usage.give_back(taken)
        raise
    return len(rows)


async def flush_or_keep(engine: AsyncEngine, usage: Usage) -> None:
    """:func:`flush`, saying in one line when it failed (the counts are kept for the next)."""
    try:
        await flush(engine, usage)
    except Exception as exc:
        log.warning(
            "usage not flushed (%s); %d clinic-day(s) kept for the next try",
            type(exc).__name__,
            len(usage),
        )


class Flusher:
    """Flushes a process's usage every ``every`` seconds while it runs, and once more when it
    stops (within ``stop_within`` seconds: a database that does not answer must not hold the
    shutdown; what is unwritten then is lost with the process)."""

    def __init__(self, engine: AsyncEngine, usage: Usage, every: float, stop_within: float):
        self.engine = engine
        self.usage = usage
        self.every = every
        self.stop_within = stop_within
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Flusher:
        self._task = asyncio.create_task(self._keep_flushing(), name="vetify-usage")
        return self

    async def _keep_flushing(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await flush_or_keep(self.engine, self.usage)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with asyncio.timeout(self.stop_within):
                await flush_or_keep(self.engine, self.usage)
        except TimeoutError:
            log.warning("usage not flushed at shutdown: %d clinic-day(s) lost", len(self.usage))


def flusher(engine: AsyncEngine, usage: Usage, settings: Settings) -> Flusher:
    """The process's flusher, as the settings say."""
    return Flusher(
        engine,
        usage,
        every=settings.usage_flush_seconds,
        stop_within=settings.shutdown_timeout_seconds * STOP_SHARE,
    )
