"""What a Prometheus scrape of Vetify returns, and the two ways to reach it (ADR 0023).

A scrape is this process's instruments, or, under `vetify serve --workers N`, the sum of every
worker's (prometheus-client's multiprocess files in ``PROMETHEUS_MULTIPROC_DIR``), plus what
only the database knows, read when scraped: the job queue, the Stripe event inbox and the WAL
archiver; and, on the embedded database, its backups' state.

Never public: on a listener of its own (``VETIFY_METRICS_PORT``, loopback by default), or on the
API's port to a bearer of ``VETIFY_METRICS_TOKEN``. Neither configured: no route at all.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import SecretStr

from app.backup import service as backup
from app.backup.metrics import BackupFigures
from app.db.migrate import plain_url
from app.kit.problems import Unauthenticated
from app.observability import metrics
from app.observability.metrics import REGISTRY, instruments
from app.settings import Settings

log = logging.getLogger("vetify.metrics")

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
DATABASE_SECONDS = 2
"""The most a scrape waits for the database's figures (to connect, then per statement): a
database in trouble must not make the scrape time out, and hide the metrics that show it."""

_QUEUE = """
SELECT j.queue_name, j.status::text, count(*), count(*) FILTER (WHERE j.attempts > 0),
       coalesce(max(extract(epoch FROM now() - coalesce(j.scheduled_at, d.at))), 0)
FROM procrastinate_jobs j
LEFT JOIN LATERAL (
    SELECT min(e.at) AS at FROM procrastinate_events e WHERE e.job_id = j.id AND e.type = 'deferred'
) d ON true
WHERE j.status IN ('todo', 'doing', 'failed')
  AND (j.status <> 'todo' OR j.scheduled_at IS NULL OR j.scheduled_at <= now())
GROUP BY 1, 2
"""
"""Per queue and status, the jobs due (a job scheduled for later is not late), those on a retry,
and how long the oldest has waited since it was due."""
_STRIPE = "SELECT status::text, count(*) FROM stripe_events GROUP BY 1"
_HEARTBEAT = "SELECT extract(epoch FROM max(last_heartbeat)) FROM procrastinate_workers"
"""procrastinate's own record of its running workers (ADR 0024)."""
_ARCHIVER = """
SELECT coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)::int
FROM pg_stat_archiver WHERE current_setting('archive_mode') <> 'off'
"""
"""Whether the server's last attempt to archive a WAL segment failed (no row: not archiving)."""


class DatabaseFigures:
    """A collector asking the database, when scraped, for what no process counts."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "vetify_jobs",
                "Jobs by queue and status (todo: due now).",
                labels=["queue", "status"],
            ),
            GaugeMetricFamily(
                "vetify_jobs_retrying",
                "Due jobs that failed before and wait for a retry.",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "vetify_jobs_oldest_due_age_seconds",
                "How long the longest-waiting due job of a queue has waited.",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "vetify_stripe_events",
                "Stripe events received, by processing status (failed: needs replay).",
                labels=["status"],
            ),
            GaugeMetricFamily(
                "vetify_worker_heartbeat_timestamp_seconds",
                "Unix time a job worker last said it was alive (absent: none is running).",
            ),
            GaugeMetricFamily(
                "vetify_wal_archive_failing",
                "1 while the server's WAL archiving fails (absent: it does not archive).",
            ),
            GaugeMetricFamily(
                "vetify_metrics_database_up",
                "1 when the scrape could read the figures above from the database.",
            ),
        )

    def collect(self) -> Iterator[Metric]:
        jobs, retrying, oldest, stripe, heartbeat, archiving, up = self._families()
        try:
            with psycopg.connect(
                plain_url(self.database_url or ""),
                connect_timeout=DATABASE_SECONDS,
                options=f"-c statement_timeout={DATABASE_SECONDS * 1000}",
                autocommit=True,
            ) as connection:
                for queue, status, count, retries, age in connection.execute(_QUEUE):
                    jobs.add_metric([queue, status], count)
                    if status == "todo":
                        retrying.add_metric([queue], retries)
                        oldest.add_metric([queue], float(age))
                for status, count in connection.execute(_STRIPE):
                    stripe.add_metric([status], count)
                (last,) = connection.execute(_HEARTBEAT).fetchone() or (None,)
                (failing,) = connection.execute(_ARCHIVER).fetchone() or (None,)
        except (psycopg.Error, OSError, ValueError) as exc:
            log.warning("metrics: the database's figures are missing (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        if last is not None:
            heartbeat.add_metric([], float(last))
            yield heartbeat
        if failing is not None:
            archiving.add_metric([], failing)
            yield archiving
        yield from (jobs, retrying, oldest, stripe, up)


class _ThisProcess:
    """This process's own instruments, as one collector of the scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        instruments()
        return REGISTRY.collect()


def registry(settings: Settings) -> CollectorRegistry:
    """The registry a scrape reads: every worker's counts when they share a directory, else
    this process's; and the database's figures."""
    scraped = CollectorRegistry(auto_describe=False)
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.MultiProcessCollector(scraped)  # type: ignore[no-untyped-call]
    else:
        scraped.register(_ThisProcess())
    database = settings.database_url.get_secret_value() if settings.database_url else None
    scraped.register(DatabaseFigures(database))
    repository = backup.repository(settings)
    # Where the embedded database archives (a served process's settings name its URLs).
    if repository.wal.is_dir():
        scraped.register(BackupFigures(repository))
    return scraped


def router(settings: Settings, token: SecretStr) -> APIRouter:
    """``GET /metrics`` on the API's port, to a bearer of ``token`` alone."""
    expected = f"Bearer {token.get_secret_value()}".encode()
    scraped = registry(settings)
    routes = APIRouter()

    @routes.get("/metrics", include_in_schema=False)
    async def metrics(
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        # In constant time: how much of a guess matched must not show in the answer's timing.
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise Unauthenticated("Send the metrics token: Authorization: Bearer <token>.")
        # In a thread: the database's figures are read with a blocking driver.
        body = await run_in_threadpool(generate_latest, scraped)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return routes


def listen(settings: Settings) -> Any:
    """Serve the scrape on ``VETIFY_METRICS_HOST:VETIFY_METRICS_PORT`` (a thread of this
    process) if a port is set; the server, to shut down, or None."""
    if settings.metrics_port is None:
        return None
    metrics.announce_build(settings)
    server, _thread = start_http_server(
        settings.metrics_port, settings.metrics_host, registry=registry(settings)
    )
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server


def process_ended(pid: int) -> None:
    """A worker under the supervisor is gone: its live gauges (in flight, pool) no longer count."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
