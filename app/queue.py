"""The job queue: procrastinate, in the service's own PostgreSQL (ADR 0012).

Tasks live in each domain's ``jobs.py`` and register on :data:`queue` under a name
(``"<domain>.<task>"``). Services enqueue a task by that name with :func:`enqueue`, inside
their own transaction: a request that rolls back leaves no job, and a job never runs before the
rows it is about are committed. Enqueueing by name is what lets a ``jobs.py`` import its
domain's service without the service importing it back. ``vetify worker`` runs the jobs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import procrastinate
from procrastinate.job_context import JobContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.migrate import plain_url
from app.db.session import create_engine, database_url, session_factory
from app.settings import Settings

TASK_MODULES = ["app.attachments.jobs", "app.auth.jobs", "app.billing.jobs"]
RUNTIME = "vetify"

# The connector is chosen when a worker starts (``with_connector``); nothing connects before.
queue = procrastinate.App(connector=procrastinate.PsycopgConnector(), import_paths=TASK_MODULES)


@dataclass(frozen=True)
class Runtime:
    """What tasks use, made once per worker (``runtime(context)`` in a task)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    services: dict[str, Any]
    """Per-domain clients (e.g. billing's Stripe client), made on first use."""

    def service(self, name: str, make: Callable[[Settings], Any]) -> Any:
        if name not in self.services:
            self.services[name] = make(self.settings)
        return self.services[name]


def runtime(context: JobContext) -> Runtime:
    found: Runtime = context.additional_context[RUNTIME]
    return found


async def enqueue(
    session: AsyncSession,
    task_name: str,
    *,
    schedule_at: dt.datetime | None = None,
    **arguments: Any,
) -> int:
    """Defer the task registered as ``task_name`` in ``session``'s transaction.

    Uses procrastinate's own defer function in SQL: its ``defer_async`` would use a connection
    of its own, outside the request's transaction. A name no ``jobs.py`` registers raises
    ``procrastinate.exceptions.TaskNotFound`` (the task modules are imported on first use).
    """
    job = queue.configure_task(task_name, allow_unknown=False, schedule_at=schedule_at).job
    job_id = await session.scalar(
        text(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, :priority,"
            " :lock, :queueing_lock, CAST(:args AS jsonb), :at)::procrastinate_job_to_defer_v1]))"
        ),
        {
            "queue": job.queue,
            "task": job.task_name,
            "priority": job.priority,
            "lock": job.lock,
            "queueing_lock": job.queueing_lock,
            "args": json.dumps(arguments),
            "at": job.scheduled_at,
        },
    )
    if job_id is None:
        raise RuntimeError(f"procrastinate deferred no job for {task_name}")
    return int(job_id)


async def run_worker(
    settings: Settings, *, wait: bool = True, concurrency: int = 1, own_signals: bool = True
) -> None:
    """Run jobs until stopped (``wait``), or until none is due (tests, one-off catch-up).

    ``own_signals``: stop on SIGINT/SIGTERM (``vetify worker``); inside the API process the
    server owns the signals and cancels the worker's task instead."""
    engine = create_engine(settings)
    connector = procrastinate.PsycopgConnector(
        conninfo=plain_url(database_url(settings)),
        min_size=1,
        max_size=max(2, concurrency + 1),
    )
    app = queue.with_connector(connector)
    context = Runtime(settings, session_factory(engine), {})
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        stack.push_async_callback(_close_services, context)
        await stack.enter_async_context(app.open_async())
        await app.run_worker_async(
            wait=wait,
            concurrency=concurrency,
            install_signal_handlers=wait and own_signals,
            listen_notify=wait,
            # Done jobs go; failed ones stay for operators (and the domain keeps its own record).
            delete_jobs="successful",
            additional_context={RUNTIME: context},
        )


async def _close_services(context: Runtime) -> None:
    for service in context.services.values():
        close = getattr(service, "close", None)
        if close is not None:
            await close()
