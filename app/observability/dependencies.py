"""The dependency report: each thing the service talks to, probed side by side, each cut at a
deadline, so the report comes in time even when one of them hangs. ``/health/dependencies``
(operators) and ``vetify check`` (cron, uptime checks) print it (ADR 0024).

The job workers' heartbeat is procrastinate's own: every running worker (`vetify worker`, and
`vetify serve`'s in-process one) updates its row of ``procrastinate_workers`` every 10 s, and
procrastinate calls a worker gone after 30 s without one (its ``stalled_worker_timeout``), which
is the threshold used here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiosmtplib
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit import clamd
from app.kit.storage import S3Storage, Storage
from app.settings import Settings

WORKER_GONE_SECONDS = 30.0
"""A worker silent for longer is gone (procrastinate's ``stalled_worker_timeout``)."""
QUEUE_LAG_DEGRADED_SECONDS = 60.0
"""A job due for longer than this, still waiting: the workers are not keeping up."""


class Status(StrEnum):
    ok = "ok"
    degraded = "degraded"
    down = "down"
    not_configured = "not_configured"


class Unhealthy(Exception):
    """A probe's finding that its dependency is down, in words safe to show an operator."""


@dataclass(frozen=True)
class Finding:
    status: Status
    latency_ms: float | None = None
    detail: str | None = None
    required: bool = False


Probe = Callable[[], Awaitable[str | None]]
"""Returns a note (None: nothing to say), or raises: :class:`Degraded`, :class:`Unhealthy` or
any other exception (then down, named by its class only: its message may hold an address)."""


class Degraded(Exception):
    """Answered, but not as it should (a queue falling behind)."""


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe | None
    """None: not configured."""
    required: bool = False
    """The service cannot do its work without it: `vetify check` fails when it is down."""


@dataclass(frozen=True)
class Report:
    findings: dict[str, Finding]

    @property
    def status(self) -> Status:
        found = self.findings.values()
        if any(f.required and f.status is Status.down for f in found):
            return Status.down
        if any(f.status in (Status.down, Status.degraded) for f in found):
            return Status.degraded
        return Status.ok

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "dependencies": {
                name: {
                    "status": f.status.value,
                    "required": f.required,
                    "latency_ms": f.latency_ms,
                    "detail": f.detail,
                }
                for name, f in self.findings.items()
            },
        }


async def report(checks: list[Check], within: float) -> Report:
    """Every check at once, each given ``within`` seconds."""
    findings = await asyncio.gather(*(_run(check, within) for check in checks))
    return Report({check.name: found for check, found in zip(checks, findings, strict=True)})


async def _run(check: Check, within: float) -> Finding:
    if check.probe is None:
        return Finding(Status.not_configured, required=check.required)
    started = time.perf_counter()
    status, detail = Status.ok, None
    try:
        async with asyncio.timeout(within):
            detail = await check.probe()
    except Degraded as exc:
        status, detail = Status.degraded, str(exc)
    except Unhealthy as exc:
        status, detail = Status.down, str(exc)
    except TimeoutError:
        status, detail = Status.down, f"no answer within {within:g} s"
    except Exception as exc:  # a probe's failure, whatever it is, is the report's finding
        status, detail = Status.down, type(exc).__name__
    latency = round((time.perf_counter() - started) * 1000, 1)
    return Finding(status, latency, detail, check.required)


# -- the probes -----------------------------------------------------------------------------------
def database(engine: AsyncEngine) -> Probe:
    async def probe() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return probe


def redis(client: Redis | None) -> Probe | None:
    if client is None:
        return None

    async def probe() -> None:
        await client.ping()

    return probe


def worker(engine: AsyncEngine) -> Probe:
    async def probe() -> str:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT extract(epoch FROM now() - max(last_heartbeat)), count(*)"
                        " FROM procrastinate_workers"
                    )
                )
            ).one()
        age, workers = row
        if age is None:
            raise Unhealthy("no job worker is running")
        if age > WORKER_GONE_SECONDS:
            raise Unhealthy(f"no job worker seen for {age:.0f} s")
        return f"{workers} worker(s), last seen {age:.0f} s ago"

    return probe


def queue_lag(engine: AsyncEngine) -> Probe:
    """The oldest job that is due and still waits: how far behind the workers are."""

    async def probe() -> str:
        async with engine.connect() as connection:
            lag = await connection.scalar(
                text(
                    "SELECT extract(epoch FROM now() - min(coalesce(j.scheduled_at, e.at)))"
                    " FROM procrastinate_jobs j LEFT JOIN procrastinate_events e"
                    " ON e.job_id = j.id AND e.type = 'deferred'"
                    " WHERE j.status = 'todo'"
                    " AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())"
                )
            )
        seconds = max(0.0, float(lag or 0))
        note = f"oldest waiting job: {seconds:.0f} s"
        if seconds > QUEUE_LAG_DEGRADED_SECONDS:
            raise Degraded(note)
        return note

    return probe


def smtp(settings: Settings) -> Probe | None:
    if settings.smtp_host is None:
        return None
    host, port = settings.smtp_host, settings.smtp_port

    async def probe() -> None:
        # Connect and greet only: whether mail goes through is the relay's to say, per message.
        relay = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, use_tls=False)
        await relay.connect()
        try:
            await relay.ehlo()
            await relay.noop()
        finally:
            await relay.quit()

    return probe


def s3(storage: Storage) -> Probe | None:
    if not isinstance(storage, S3Storage):
        return None
    return storage.reachable


def clamd_daemon(settings: Settings) -> Probe | None:
    if settings.clamd_address is None:
        return None
    address = settings.clamd_address

    async def probe() -> None:
        await clamd.ping(address)

    return probe


@dataclass
class Cached:
    """A probe asked at most once per ``seconds`` (a paid or rate-limited API): the finding in
    between is the last one, a failure included."""

    probe: Probe
    seconds: float
    _at: float = field(default=-1e18)
    _outcome: tuple[str | None, BaseException | None] = (None, None)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self) -> str | None:
        async with self._lock:
            if time.monotonic() - self._at >= self.seconds:
                try:
                    self._outcome = (await self.probe(), None)
                except Exception as exc:  # kept, and raised to each caller until it expires
                    self._outcome = (None, exc)
                self._at = time.monotonic()
        note, failure = self._outcome
        if failure is not None:
            raise failure
        return note


def checks(
    settings: Settings,
    engine: AsyncEngine,
    redis_client: Redis | None,
    storage: Storage,
    more: Mapping[str, Probe | None],
) -> list[Check]:
    """The service's dependencies; ``more`` are those of domains (Stripe, from app/billing)."""
    return [
        Check("database", database(engine), required=True),
        Check("redis", redis(redis_client)),
        Check("worker", worker(engine), required=True),
        Check("queue", queue_lag(engine)),
        *(Check(name, probe) for name, probe in more.items()),
        Check("smtp", smtp(settings)),
        Check("s3", s3(storage)),
        Check("clamd", clamd_daemon(settings)),
    ]
