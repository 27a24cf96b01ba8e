"""The load stage: how long and how hard (``VETIFY_SUITE_LENGTH``), the fleet of clinics, and the
server they load.

The soak (test_soak.py) runs at full length only, nightly: at smoke length it is not collected
(a skip would fail the pr set's --forbid-skips, and a soak of seconds measures nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from tests.harness.live import Length, LiveServer, suite_length
from tests.harness.plugin import serving
from tests.harness.services import PostgresServer, RedisServer
from tests.load.fleet import manifest, seed_fleet
from tests.load.slo import Budget
from tests.load.soak import Limits

collect_ignore = ["test_soak.py"] if suite_length() == "smoke" else []


@dataclass(frozen=True)
class Profile:
    clinics: int
    customers: int
    """Pet owners per clinic (each with one or two pets, records, appointments)."""
    pace: float
    """Mean seconds between two tasks of one clinic user (front desk, vet, integration)."""
    login_pace: float
    """Seconds between two log-ins across the fleet (each costs argon2)."""
    webhook_pace: float
    """Seconds between two bursts of Stripe deliveries (11 each)."""
    spawn_rate: float
    seconds: int
    warmup: float
    """Seconds, once every user runs, before latencies count (they are the run's last
    ``seconds - warmup - spawning``)."""
    budgets: dict[str, Budget]
    rps_floor: float
    """Requests per second, at least, once every user is running."""

    @property
    def users(self) -> int:
        """A front desk, a vet and an integration per clinic, one user logging staff in, one
        delivering Stripe's webhooks."""
        return 3 * self.clinics + (self.login_pace > 0) + (self.webhook_pace > 0)


# Measured here, 2026-12-05, on the 2-core box while four other engineers' suites ran (load
# average 5-12: the numbers are contended ones), `python -m pytest tests/load` with the length:
#
# * smoke (5 clinics, 17 users, about 24 req/s offered): 22-24 req/s; p50 15-45 ms per class;
#   p95 read 177, search 198, write 312, upload 289, webhook 102, login 896 ms; p99 <= 416 ms
#   (login 896). Without the warm-up the first requests (pool connections opening, statements
#   prepared) put read's p95 at 1,160 ms. The budgets allow about 2.5 times the contended p95:
#   looser than full, still 3 times tighter than the old single 1,500 ms.
# * full (200 clinics, 602 users): the server spends 9-13 ms of CPU per request of this mix (the
#   soak: 0.34 core at 34 req/s), and one process uses one core, so it tops out near 100 req/s
#   on a core of its own. Pace 5 (about 160 req/s offered) saturated it at 90 req/s (p50 2.7 s;
#   pool waits past 5 s answered 503 database-busy, as designed). Pace 12 (about 68 offered):
#   68 req/s, no failure, no foreign id in 12,887 answers; p50 about 200 ms, p95 0.9 s, p99
#   1.4 s (login p95 1.6 s, webhook 0.4 s) with the server on about half a core.
#   The floor is 55 req/s (the offered 68 less 20%: a server that cannot keep up shows as
#   throughput falling behind the pace). The latency budgets are the targets widened
#   for that utilisation (about 65% of a core) and are for the nightly's own runner: on this
#   shared box today they fail on latency alone. 100 req/s waits for a cheaper hot path.
PROFILES: dict[Length, Profile] = {
    "smoke": Profile(
        clinics=5,
        customers=8,
        pace=1.0,
        login_pace=2.0,
        webhook_pace=5.0,
        spawn_rate=20,
        seconds=20,
        warmup=5,
        budgets={
            "read": Budget(p95_ms=500, p99_ms=1000),
            "search": Budget(p95_ms=500, p99_ms=1000),
            "write": Budget(p95_ms=750, p99_ms=1500),
            "upload": Budget(p95_ms=1000, p99_ms=2000),
            "login": Budget(p95_ms=2000, p99_ms=3000),
            "webhook": Budget(p95_ms=750, p99_ms=1500),
            "page": Budget(p95_ms=500, p99_ms=1000),
        },
        rps_floor=15,
    ),
    "full": Profile(
        clinics=200,
        customers=15,
        pace=12.0,
        login_pace=2.0,
        webhook_pace=15.0,
        spawn_rate=20,
        seconds=300,
        warmup=30,
        budgets={
            "read": Budget(p95_ms=150, p99_ms=400),
            "search": Budget(p95_ms=200, p99_ms=500),
            "write": Budget(p95_ms=300, p99_ms=600),
            "upload": Budget(p95_ms=400, p99_ms=800),
            "login": Budget(p95_ms=1500, p99_ms=2500),
            "webhook": Budget(p95_ms=300, p99_ms=600),
            "page": Budget(p95_ms=300, p99_ms=600),
        },
        rps_floor=55,
    ),
}


@pytest.fixture(scope="session")
def profile() -> Profile:
    return PROFILES[suite_length()]


@pytest.fixture(scope="session")
def load_reports(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.rootpath / "reports" / "load"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """Other stages in this session may have just put a fault right; start from a ready service."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health/ready", timeout=5)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} was not ready within {timeout}s (last: {last!r})")


@dataclass(frozen=True)
class Fleet:
    server: LiveServer
    manifest: Path
    webhook_secret: str
    seeded_in: float
    """Seconds the seeding took."""


@pytest.fixture(scope="session")
def fleet(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    profile: Profile,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """`vetify serve` with the profile's clinics seeded into its database; the manifest (their
    credentials and ids: test data of a throwaway database, kept out of reports/) in a
    temporary file."""
    files = tmp_path_factory.mktemp("load")
    secret = "whsec_load" + secrets.token_hex(16)  # pragma: allowlist secret - drawn per run
    with serving(
        postgres_server,
        redis_server,
        VETIFY_STRIPE_WEBHOOK_SECRET=secret,
        VETIFY_ATTACHMENTS_DIR=str(files / "attachments"),
    ) as server:
        started = time.monotonic()
        clinics = asyncio.run(
            seed_fleet(server.database.app_url, profile.clinics, profile.customers)
        )
        seeded_in = time.monotonic() - started
        path = files / "fleet.json"
        path.write_text(json.dumps(manifest(clinics)), encoding="utf-8")
        wait_until_ready(server.url)
        yield Fleet(server, path, secret, seeded_in)


@dataclass(frozen=True)
class SoakProfile:
    seconds: int
    warmup: float
    """Seconds of the start left out of the slopes: the pool fills, caches and the allocator
    settle."""
    load: Profile
    limits: Limits


SOAK = SoakProfile(
    seconds=int(os.environ.get("VETIFY_SOAK_SECONDS", "1800")),
    warmup=float(os.environ.get("VETIFY_SOAK_WARMUP", "300")),
    load=replace(PROFILES["full"], pace=25.0, login_pace=5.0, webhook_pace=30.0),
    # The calibration soak (30 min, 200 clinics, ~34 req/s, 2026-12-05, load average 5-10 from
    # other suites): after the 5-minute warm-up every Theil-Sen slope was 0.0 per hour but the
    # TCP connections' (0.0 over 25 min, -16 and +25 in its halves: Locust's clients come and
    # go); RSS held at 145.6 MiB between argon2's 64 MiB spikes, 13 other descriptors, 10 pooled
    # connections, 0-20 checked out (1.6 on average). A leak of a MiB a minute is 60 an hour, of
    # a descriptor or a checkout every 10 minutes 6 an hour.
    limits=Limits(
        rss_mib_per_hour=10,
        files_per_hour=2,
        tcp_per_hour=60,
        db_connections_per_hour=2,
        db_in_use_per_hour=2,
    ),
)
