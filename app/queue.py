"""The job queue: procrastinate, in the service's own PostgreSQL (ADR 0012).

Tasks live in each domain's ``jobs.py`` and register on :data:`queue` under a name
(``"<domain>.<task>"``). Services enqueue a task by that name with :func:`enqueue`, inside
their own transaction: a request that rolls back leaves no job, and a job never runs before the
rows it is about are committed. Enqueueing by name is what lets a ``jobs.py`` import its
domain's service without the service importing it back. ``vetify worker`` runs the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import procrastinate
import psycopg
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job
from procrastinate.worker import Worker as ProcrastinateWorker
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.migrate import plain_url
from app.db.session import create_engine, database_url, session_factory
from app.kit.context import Context, bound
from app.kit.usage import Usage, clinic_named
from app.settings import Settings

TASK_MODULES = ["app.attachments.jobs", "app.auth.jobs", "app.billing.jobs", "app.privacy.jobs"]
RUNTIME = "vetify"
LONGEST_PAUSE = 30.0
"""Seconds, at most, between a worker's restarts while the database is away."""

TRACE_ARGUMENT = "_trace"
"""The argument a job keeps the trace context of the work that enqueued it in (W3C
``traceparent``, ``tracestate``), when tracing is on: procrastinate's job row has no other place
for it. The worker takes it out before the task runs (:func:`_traced`), whether tracing is on
in the worker or not, so a task never sees it (ADR 0025)."""

log = logging.getLogger("vetify.queue")

# The connector is chosen when a worker starts (``with_connector``); nothing connects before.
queue = procrastinate.App(connector=procrastinate.PsycopgConnector(), import_paths=TASK_MODULES)


@dataclass(frozen=True)
class Runtime:
    """What tasks use, made once per worker (``runtime(context)`` in a task)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    services: dict[str, Any]
    """Per-domain clients (e.g. billing's Stripe client), made on first use."""
    usage: Usage | None = None
    """Where each job run is counted for its clinic (ADR 0026); None: not counted."""

    def service(self, name: str, make: Callable[[Settings], Any]) -> Any:
        if name not in self.services:
            self.services[name] = make(self.settings)
        return self.services[name]


class JobTracing(Protocol):
    """What tracing (app/observability/tracing.py) offers the queue, once it is on."""

    def carrier(self) -> dict[str, str]:
        """The current trace context, to store with a job (empty if none)."""
        ...

    def running(self, carrier: dict[str, str], job: Job) -> AbstractContextManager[Any]:
        """The span a job runs in, a child of the one ``carrier`` names."""
        ...


_tracing: JobTracing | None = None


def trace_jobs_with(tracing: JobTracing | None) -> None:
    """Jobs enqueued from now on carry the trace context, and jobs run in spans (None: stop)."""
    global _tracing  # the process's tracing, set up once per process
    _tracing = tracing


async def _traced(
    call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: ProcrastinateWorker
) -> Any:
    """procrastinate's worker middleware: the job's task runs without the trace argument, in the
    trace it was enqueued in when tracing is on."""
    stored = context.job.task_kwargs.pop(TRACE_ARGUMENT, None)
    if _tracing is None:
        return await call_next()
    carrier = {str(k): str(v) for k, v in stored.items()} if isinstance(stored, dict) else {}
    with _tracing.running(carrier, context.job):
        return await call_next()


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
    if _tracing is not None and (carrier := _tracing.carrier()):
        arguments = {**arguments, TRACE_ARGUMENT: carrier}
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
    settings: Settings,
    *,
    wait: bool = True,
    concurrency: int = 1,
    stop_within: float = 0.0,
    usage: Usage | None = None,
) -> None:
    """Run jobs until cancelled (``wait``), or until none is due (tests, one-off catch-up).

    Cancelled, the worker takes no new job and gives those running half of ``stop_within`` to
    finish; then it aborts them, which their retry strategy counts as a failed try: they run
    again later, here or in another worker. (Not waiting, it stops only once the jobs it ran
    are done.) Each job run is counted in ``usage`` for the clinic it was about, if any."""
    engine = create_engine(settings)
    connector = procrastinate.PsycopgConnector(
        conninfo=plain_url(database_url(settings)),
        min_size=1,
        max_size=max(2, concurrency + 1),
        # A database that has gone away fails a job's or the worker's own query after this,
        # rather than after psycopg's default 30 s wait for a pooled connection.
        timeout=settings.db_connect_timeout_seconds,
        kwargs={"connect_timeout": max(2, math.ceil(settings.db_connect_timeout_seconds))},
    )
    app = queue.with_connector(connector)
    context = Runtime(settings, session_factory(engine), {}, usage)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        stack.push_async_callback(_close_services, context)
        await stack.enter_async_context(app.open_async())
        await _retry_abandoned(app)
        await app.run_worker_async(
            wait=wait,
            concurrency=concurrency,
            # The process owns the signals (app/kit/lifecycle.py) and stops the worker.
            install_signal_handlers=False,
            listen_notify=wait,
            shutdown_graceful_timeout=stop_within / 2,
            # Done jobs go; failed ones stay for operators (and the domain keeps its own record).
            delete_jobs="successful",
            additional_context={RUNTIME: context},
            worker_middleware=[in_job_context, _traced],
        )


async def in_job_context(
    call_next: Callable[[], Awaitable[Any]], context: JobContext, worker: Any
) -> Any:
    """Each job runs in a :class:`~app.kit.context.Context` of its own: its lines carry its id,
    queue and task (and what the task adds: billing's Stripe event id).

    Each run (a retry is another) counts for the clinic it was about: the one its arguments
    name, or the one the task found (a Stripe event's), failed or not (ADR 0026)."""
    job = context.job
    named = clinic_named(job.task_kwargs)
    usage = runtime(context).usage if RUNTIME in context.additional_context else None
    with bound(Context(job_id=job.id, queue=job.queue, task=job.task_name)) as bound_to:
        try:
            return await call_next()
        finally:
            clinic = bound_to.clinic_id or named
            if usage is not None and clinic is not None:
                usage.job(clinic)


async def _retry_abandoned(app: procrastinate.App) -> None:
    """Jobs left ``doing`` by a worker that has been gone for procrastinate's stalled-worker
    timeout (30 s: killed, or stopped while the database was away, which kept it from recording
    the abort) run again, as a retry."""
    for job in await app.job_manager.get_stalled_jobs():
        log.warning("job %s was left running by a worker that is gone: retried", job.call_string)
        # Another worker starting at the same time may have retried it first.
        with contextlib.suppress(procrastinate.exceptions.ConnectorException):
            await app.job_manager.retry_job(job)


class Worker:
    """The job worker of a process (`vetify worker`; `vetify serve` with jobs in process): kept
    running through database outages, and stopped within ``stop_within`` seconds.

    procrastinate's worker stops by itself when it loses the database (its listener fails);
    this one starts it again after a pause, up to :data:`LONGEST_PAUSE` s. Stopping, a worker that
    cannot reach the database cannot record that either: its running job stays ``doing`` until
    a worker starts later (:func:`_retry_abandoned`)."""

    def __init__(self, settings: Settings, stop_within: float, usage: Usage | None = None) -> None:
        self.settings = settings
        self.stop_within = stop_within
        self.usage = usage
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Worker:
        self._task = asyncio.create_task(self._keep_working(), name="vetify-jobs")
        return self

    async def _keep_working(self) -> None:
        pause = 1.0
        while not self._stopping:
            try:
                await run_worker(self.settings, stop_within=self.stop_within, usage=self.usage)
                why = "it stopped"
            except Exception as exc:
                why = _one_line(exc)
                if self._stopping:
                    log.warning("the job worker did not stop cleanly: %s", why)
            if self._stopping:
                return
            log.warning("the job worker stopped (%s); starting it again in %.0f s", why, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    async def stop(self) -> None:
        """Running jobs get the first half of ``stop_within`` to finish; then they are aborted
        and their retries recorded, and the worker unregisters. Whatever still waits on the
        database at three quarters is cancelled, which leaves a quarter to close the pool."""
        if self._task is None:
            return
        self._stopping = True
        self._task.cancel()
        if not (await asyncio.wait({self._task}, timeout=self.stop_within * 3 / 4))[0]:
            log.warning("the job worker is not stopping: no longer waiting for the database")
            self._task.cancel()  # again: procrastinate waits out the first one's shutdown
            await asyncio.wait({self._task}, timeout=self.stop_within / 4)


class ExpectedInOneLine(logging.Filter):
    """procrastinate logs a traceback for what an operator expects and needs no traceback for:
    a job aborted by a shutdown, and the database (or a job's mail relay, Stripe...) out of
    reach, which while the database is away is every side task's and job's error. Such a
    record keeps its message and level, with the exception in one line. A handler's filter:
    filters on a logger do not reach its children's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (_aborted(record, exc) or _out_of_reach(exc)):
            record.msg, record.args = f"{record.getMessage()} ({_one_line(exc)})", None
            record.exc_info, record.exc_text = None, None
        return True


def _aborted(record: logging.LogRecord, exc: BaseException) -> bool:
    action = getattr(record, "action", "")
    return isinstance(exc, asyncio.CancelledError) and action.startswith("job_aborted")


def _out_of_reach(exc: BaseException) -> bool:
    """Refused, reset, timed out, as psycopg, SQLAlchemy or the OS says it; not an SQL error."""
    return any(
        isinstance(cause, psycopg.OperationalError | ConnectionError | TimeoutError)
        or (isinstance(cause, DBAPIError) and cause.connection_invalidated)
        for cause in _causes(exc)
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__ or cause.__context__


def _one_line(exc: BaseException) -> str:
    """An exception and its causes in one line, the way an operator reads a log."""
    parts = []
    for cause in itertools.islice(_causes(exc), 3):
        message = " ".join(str(cause).split())
        parts.append(f"{type(cause).__name__}: {message}" if message else type(cause).__name__)
    return " <- ".join(parts)


async def _close_services(context: Runtime) -> None:
    for service in context.services.values():
        close = getattr(service, "close", None)
        if close is not None:
            await close()
