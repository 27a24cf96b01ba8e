"""The job worker of a process (app/queue.py ``Worker``) on the real database: it outlasts a
database outage, and a job left running by a worker that is gone runs again
(tests/chaos/test_lifecycle.py stops real processes with jobs running)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.billing.intake import APPLY_STRIPE_EVENT
from app.queue import Worker, enqueue
from app.settings import Settings
from tests.harness.databases import Database
from tests.harness.plugin import through_proxy
from tests.harness.proxy import FaultProxy
from tests.harness.queue import drain

STOP_WITHIN = 4.0
WITHIN = 60.0
"""Generous: a shared, noisy machine; the worker's pauses grow to 30 s only after many tries."""


async def _until(what: str, done: Callable[[], Awaitable[bool]]) -> None:
    started = time.monotonic()
    while not await done():
        assert time.monotonic() - started < WITHIN, f"not {what} within {WITHIN} s"
        await asyncio.sleep(0.1)


async def _a_job(engine: AsyncEngine) -> int:
    """A job that runs at once and succeeds (the event it names was never stored)."""
    async with async_sessionmaker(engine)() as session, session.begin():
        return await enqueue(session, APPLY_STRIPE_EVENT, event_id="evt_never_stored")


async def _gone(engine: AsyncEngine, job_id: int) -> bool:
    """Ran and succeeded: the worker deletes its successful jobs."""
    async with engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM procrastinate_jobs WHERE id = :id"), {"id": job_id}
        )
    return found == 0


async def test_the_worker_starts_again_once_the_database_is_back(
    settings: Settings,
    database_proxy: FaultProxy,
    app_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = database_proxy
    worker = Worker(
        through_proxy(settings, proxy, db_connect_timeout_seconds=1.0), STOP_WITHIN
    ).start()

    async def registered() -> bool:
        async with app_engine.connect() as connection:
            return bool(await connection.scalar(text("SELECT count(*) FROM procrastinate_workers")))

    async def restarting() -> bool:
        return "starting it again" in caplog.text

    try:
        with caplog.at_level(logging.WARNING, logger="vetify.queue"):
            await _until("registered", registered)
            proxy.refuse = True
            proxy.reset_all()
            await _until("restarting", restarting)
            proxy.refuse = False
            job = await _a_job(app_engine)
            await _until("the job run", lambda: _gone(app_engine, job))
    finally:
        proxy.refuse = False
        started = time.monotonic()
        await worker.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < STOP_WITHIN + 2


async def test_a_job_left_running_by_a_worker_that_is_gone_runs_again(
    settings: Settings, database: Database, app_engine: AsyncEngine
) -> None:
    job = await _a_job(app_engine)
    # As a worker killed mid-job leaves it: doing, and no live worker holding it.
    async with app_engine.begin() as connection:
        await connection.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = :id"), {"id": job}
        )

    await drain(settings)

    assert await _gone(app_engine, job)
