"""What the service counts for Prometheus (prometheus-client), and the few calls that count it.

Every label takes a bounded set of values: a route's template (never the path a client sent),
a method, a status class, a policy or an outcome. No clinic id, user id or address is a label:
per-clinic usage is the operators' table (docs/operations.md), not a series per clinic.

The instruments are made on first use, not at import: `vetify serve --workers N` imports the
whole app before its supervisor chooses the directory the workers share their counts in
(``PROMETHEUS_MULTIPROC_DIR``), and prometheus-client decides between this process's memory and
that directory when a value is made (ADR 0023).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.session import WatchedPool
from app.kit.events import SecurityEvent, subscribe
from app.kit.mail import Mail, Mailer
from app.settings import Settings

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1, 2.5, 5)
"""Seconds: fine between 5 and 500 ms (the latency budgets of tests/load), coarse above."""

REGISTRY = CollectorRegistry()
"""This process's instruments (a scrape adds the database's figures: scrape.py)."""


class Instruments:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "vetify_http_requests",
            "HTTP requests answered, by method, route template and status class.",
            ["method", "route", "status_class"],
            registry=registry,
        )
        self.duration = Histogram(
            "vetify_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "vetify_http_requests_in_flight",
            "Requests being answered now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_size = Gauge(
            "vetify_db_pool_size",
            "Connections the database pool keeps (VETIFY_DB_POOL_SIZE), per process summed.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_checked_out = Gauge(
            "vetify_db_pool_checked_out",
            "Pooled database connections in use by a request or job now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_overflow = Gauge(
            "vetify_db_pool_overflow",
            "Connections open beyond the pool's size (up to VETIFY_DB_MAX_OVERFLOW).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.pool_waits = Counter(
            "vetify_db_pool_checkout_waits",
            "Checkouts that found every connection in use and waited for one.",
            registry=registry,
        )
        self.pool_timeouts = Counter(
            "vetify_db_pool_checkout_timeouts",
            "Checkouts that waited VETIFY_DB_CONNECT_TIMEOUT_SECONDS in vain (answered 503).",
            registry=registry,
        )
        self.rate_limited = Counter(
            "vetify_rate_limit_rejections",
            "Requests refused by a rate limit (429, or a reset mail not sent), by policy.",
            ["policy"],
            registry=registry,
        )
        self.security_events = Counter(
            "vetify_security_events",
            "Security events (app/kit/events.py) by event and outcome: failed log-ins,"
            " lockouts, MFA failures, refusals... (incident detection alerts on their rates).",
            ["event", "outcome"],
            registry=registry,
        )
        self.scans = Counter(
            "vetify_attachment_scans",
            "Attachments scanned for malware, by verdict (clean, infected).",
            ["verdict"],
            registry=registry,
        )
        self.mail = Counter(
            "vetify_mail",
            "Mails handed to the relay, by outcome (sent, failed, unconfigured).",
            ["outcome"],
            registry=registry,
        )
        self.build = Gauge(
            "vetify_build_info",
            "Always 1: the running version and git commit, as labels.",
            ["version", "git_sha"],
            registry=registry,
            multiprocess_mode="max",
        )


_made: Instruments | None = None


def instruments() -> Instruments:
    global _made
    if _made is None:
        # Chosen again now (prometheus-client chose when it was imported): the supervisor of
        # `vetify serve --workers N` sets PROMETHEUS_MULTIPROC_DIR after the import.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _made = Instruments(REGISTRY)
    return _made


@dataclass(frozen=True)
class Build:
    version: str
    git_sha: str


def build_info(settings: Settings) -> Build:
    """The installed package's version, and the commit ``VETIFY_GIT_SHA`` names (set by the
    image build; the setting takes only what a commit id looks like), else "unknown"."""
    try:
        version = metadata.version("vetify")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Build(version, settings.git_sha.lower() if settings.git_sha else "unknown")


def announce_build(settings: Settings) -> None:
    build = build_info(settings)
    instruments().build.labels(version=build.version, git_sha=build.git_sha).set(1)


def watch_pool(engine: AsyncEngine, pool_size: int) -> None:
    """Keep the pool gauges current from the pool's own events; count waits and timeouts."""
    made = instruments()
    made.pool_size.set(pool_size)
    pool = engine.sync_engine.pool

    def refresh(*_: Any) -> None:
        made.pool_checked_out.set(pool.checkedout())  # type: ignore[attr-defined]
        made.pool_overflow.set(max(0, pool.overflow()))  # type: ignore[attr-defined]

    for name in ("checkout", "checkin", "connect", "close", "invalidate"):
        event.listen(engine.sync_engine, name, refresh)
    if isinstance(pool, WatchedPool):
        pool.on_wait = made.pool_waits.inc
        pool.on_timeout = made.pool_timeouts.inc


def forget_pool(pool_size: int) -> None:
    """The engine is disposed: its connections are no longer this process's."""
    made = instruments()
    made.pool_size.dec(pool_size)
    made.pool_checked_out.set(0)
    made.pool_overflow.set(0)


def count_security_event(raised: SecurityEvent, fields: dict[str, Any]) -> None:
    """Count ``raised`` by its outcome, and a rate limit's refusal by its policy too. (Both
    labels are words of the code, never a client's: an outcome, a policy's name.)"""
    made = instruments()
    made.security_events.labels(event=str(raised), outcome=fields["outcome"]).inc()
    if raised is SecurityEvent.rate_limited:
        made.rate_limited.labels(policy=fields["policy"]).inc()


_counting = False


def count_security_events() -> None:
    """Count every security event this process raises from now on (once, however many apps
    it creates: create_app calls it)."""
    global _counting  # the process's one subscription, as the event stream is the process's
    if not _counting:
        subscribe(count_security_event)
        _counting = True


def scanned(*, clean: bool) -> None:
    instruments().scans.labels(verdict="clean" if clean else "infected").inc()


async def send(mailer: Mailer, mail: Mail) -> bool:
    """``mailer.send(mail)``, counted by how it went."""
    counts = instruments().mail
    try:
        sent = await mailer.send(mail)
    except Exception:
        counts.labels(outcome="failed").inc()
        raise
    counts.labels(outcome="sent" if sent else "unconfigured").inc()
    return sent
