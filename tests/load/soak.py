"""The soak's instruments: the server's resources sampled while it serves, and the (robust)
slope that tells a leak from noise.

Sampled every ``interval`` seconds (psutil, and PostgreSQL's own view of the server's
connections): resident memory, open file descriptors, open TCP connections (clients and the
database), and the database connections in use (a pool checkout is a connection that is running a
statement or inside a transaction; the idle ones wait in the pool).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness.databases import APP_ROLE

IN_USE = ("active", "idle in transaction", "idle in transaction (aborted)")


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since sampling started."""
    rss_mib: float
    fds: int
    tcp: int
    """The server's TCP connections: clients' (which come and go with Locust's users),
    Redis's and the database's."""
    files: int
    """File descriptors other than TCP sockets: files, pipes, the event loop's own."""
    db_connections: int
    """The service role's connections to its database (the pool's, open)."""
    db_in_use: int
    """Of those, the ones checked out: running a statement or inside a transaction."""
    cpu_seconds: float


def _database_connections(superuser_url: str, database: str) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        engine = create_async_engine(superuser_url, pool_size=1)
        try:
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        text(
                            "SELECT state FROM pg_stat_activity"
                            " WHERE datname = :db AND usename = :role AND pid <> pg_backend_pid()"
                        ),
                        {"db": database, "role": APP_ROLE},
                    )
                ).all()
        finally:
            await engine.dispose()
        return len(rows), sum(1 for (state,) in rows if state in IN_USE)

    return asyncio.run(count())


@dataclass
class Sampler:
    """Samples ``pid`` (and its children) in a thread until stopped."""

    pid: int
    superuser_url: str
    database: str
    interval: float = 10.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self, started: float) -> Sample:
        process = psutil.Process(self.pid)
        tree = [process, *process.children(recursive=True)]
        db_open, db_in_use = _database_connections(self.superuser_url, self.database)
        fds = sum(p.num_fds() for p in tree)
        tcp = sum(len(p.net_connections("tcp")) for p in tree)
        return Sample(
            at=round(time.monotonic() - started, 1),
            rss_mib=round(sum(p.memory_info().rss for p in tree) / 2**20, 2),
            fds=fds,
            tcp=tcp,
            files=fds - tcp,
            db_connections=db_open,
            db_in_use=db_in_use,
            cpu_seconds=round(sum(sum(p.cpu_times()[:2]) for p in tree), 2),
        )

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            self.samples.append(self.sample(started))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """The Theil-Sen slope of (seconds, value) points, per hour: the median of the slopes of
    every pair (0 for fewer than 2 points).

    Not least squares: the samples have spikes that are not growth. A log-in hashes its password
    with argon2 in 64 MiB, so RSS jumps by that for the seconds a hash or a few run; a stall of
    the machine checks out every pooled connection at once. One such spike near the end of the
    run moved the least-squares slope of the 30-minute calibration soak by +-14 MiB/h and the
    checkouts' by up to 15/h; the median of the pairwise slopes ignores them (0.0 for both over
    the same samples) and still follows a steady leak exactly (up to 29% of outliers)."""
    pairs = [
        (y2 - y1) / (x2 - x1)
        for (x1, y1), (x2, y2) in itertools.combinations(points, 2)
        if x2 != x1
    ]
    return statistics.median(pairs) * 3600 if pairs else 0.0


@dataclass(frozen=True)
class Limits:
    """The most each measure may grow per hour after the warm-up before the soak fails."""

    rss_mib_per_hour: float
    files_per_hour: float
    tcp_per_hour: float
    db_connections_per_hour: float
    db_in_use_per_hour: float


def judge(samples: Sequence[Sample], warmup: float, limits: Limits) -> dict[str, Any]:
    """Each measure's slope after ``warmup`` seconds against its limit: the ones over are in
    ``"over"``."""
    steady = [s for s in samples if s.at >= warmup]
    measures = {
        "rss_mib": limits.rss_mib_per_hour,
        "files": limits.files_per_hour,
        "tcp": limits.tcp_per_hour,
        "db_connections": limits.db_connections_per_hour,
        "db_in_use": limits.db_in_use_per_hour,
    }
    slopes = {
        name: round(slope_per_hour([(s.at, float(getattr(s, name))) for s in steady]), 2)
        for name in measures
    }
    return {
        "samples": len(steady),
        "slopes_per_hour": slopes,
        "limits_per_hour": measures,
        "over": {name: slopes[name] for name, limit in measures.items() if slopes[name] > limit},
    }
