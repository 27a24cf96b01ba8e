"""The clock of `vetify serve`'s host stepped (NTP correcting a drifted clock, a VM resumed),
forward and back, while it serves.

How: libfaketime (Debian's ``libfaketime``, installed by ``.ci/run``) preloaded into the process,
its offset read from a file (``FAKETIME_TIMESTAMP_FILE``, read again each second:
``FAKETIME_CACHE_DURATION``), so the test steps the wall clock of the running process by
rewriting the file, and waits until the server's ``Date`` header shows the step. The monotonic
clock is left alone (``FAKETIME_DONT_FAKE_MONOTONIC``), as an NTP step leaves it: timeouts and
the event loop do not jump. The scenario has a server of its own: under libfaketime 0.9.10 a
blocking ``time.sleep`` fails with EINVAL (its ``clock_nanosleep`` on the monotonic clock), which
boto3's retry back-off uses, so the other scenarios' server must not run under it. PostgreSQL
and Redis keep the true time, as on hosts of their own.
Nothing in the app is changed or mocked for it: the process reads the time the way it does in
production (``app/kit/clock.py``, ``time.time()``), and sees the step as it would.

The contract: never a 5xx for a step; wall-clock rules follow the clock they are defined by
(a session past its absolute lifetime ends, a trial past its end makes the clinic read-only, and
both come back when the clock is stepped back), and a log-in lock-out lasts its duration
whatever the service's clock says (Redis counts it).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.service import SESSION_COOKIE
from tests.chaos.conftest import (
    CHEAP_HASHES,
    REQUEST_TIMEOUT,
    Clinic,
    Outcome,
    new_clinic,
    smoke,
    wait_for,
)
from tests.harness.api import SIGNUP_PASSWORD, login_request
from tests.harness.live import LiveServer
from tests.harness.plugin import serving
from tests.harness.services import PostgresServer, RedisServer

LIBFAKETIME = next(
    iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))),
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
)
"""Debian's and Ubuntu's ``libfaketime``, in the machine's multiarch directory."""
LOCKOUT_MINUTES = 15


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults() -> None:
    """Overrides the chaos stage's: the scenario's server is its own."""


class Clock:
    """The stepped wall clock of the processes started with :meth:`environment`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.step("+0")

    def step(self, offset: str) -> None:
        """``offset`` from the true time, as libfaketime reads it: ``+13h``, ``-1h``, ``+15d``."""
        self.path.write_text(offset + "\n")

    async def step_seen_by(self, url: str, offset: str) -> float:
        """:meth:`step`, then wait until the server at ``url`` dates its answers by the new
        clock (its ``Date`` header, to the second)."""
        self.step(offset)
        expected = dt.datetime.now(dt.UTC) + _offset(offset)
        async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as http:

            async def dated_so() -> bool:
                answer = await http.get("/health/live")
                served = parsedate_to_datetime(answer.headers["date"])
                return abs((served - expected).total_seconds()) < 60

            return (await wait_for(f"the server's clock at {offset}", dated_so, 10))[1]

    def environment(self) -> dict[str, str]:
        assert LIBFAKETIME.exists(), f"{LIBFAKETIME}: install Debian's libfaketime (.ci/run does)"
        return {
            "LD_PRELOAD": str(LIBFAKETIME),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }


def _offset(offset: str) -> dt.timedelta:
    sign, amount, unit = offset[0], int(offset[1:-1] or 0), offset[-1]
    if offset == "+0":
        return dt.timedelta()
    seconds = amount * {"m": 60, "h": 3600, "d": 86400}[unit]
    return dt.timedelta(seconds=-seconds if sign == "-" else seconds)


@pytest.fixture
def stepped(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[LiveServer, Clock]]:
    clock = Clock(tmp_path / "faketime")
    settings = {
        **clock.environment(),
        **CHEAP_HASHES,
        "VETIFY_LOGIN_FREE_FAILURES": "1",
        "VETIFY_LOGIN_LOCKOUT_FAILURES": "2",
        "VETIFY_LOGIN_LOCKOUT_MINUTES": str(LOCKOUT_MINUTES),
    }
    with serving(postgres_server, redis_server, **settings) as live:
        yield live, clock


async def _session(live: LiveServer, email: str) -> str:
    async with httpx.AsyncClient(base_url=live.url, timeout=REQUEST_TIMEOUT) as http:
        logged_in = await http.post(**login_request(email, SIGNUP_PASSWORD))
    assert logged_in.status_code == 200, logged_in.text
    return logged_in.cookies[SESSION_COOKIE]


async def _observe(live: LiveServer, clinic: Clinic, session: str, stranger: str) -> dict[str, Any]:
    """What a client sees at this clock: its session, a write and a read with its API token,
    a log-in to a locked address, and readiness."""
    async with httpx.AsyncClient(base_url=live.url, timeout=REQUEST_TIMEOUT) as http:
        by_session = await http.get(
            "/api/v1/customers", headers={"Cookie": f"{SESSION_COOKIE}={session}"}
        )
        locked = await http.post(**login_request(stranger, "a wrong password"))
        ready = await http.get("/health/ready")
    write = await clinic.http.post(
        "/api/v1/customers", json={"first_name": "Clock", "last_name": uuid.uuid4().hex[:8]}
    )
    read = await clinic.http.get("/api/v1/customers")
    return {
        "session": by_session.status_code,
        "write": write.status_code,
        "read": read.status_code,
        "locked_login": locked.status_code,
        "lock_retry_after": int(locked.headers.get("retry-after", "-1")),
        "ready": ready.status_code,
    }


STEPS = {
    "back 1 h": "-1h",
    "forward 30 min": "+30m",
    "forward 13 h": "+13h",
    "forward 15 days": "+15d",
    "back to true": "+0",
}
"""Each step from the true time, in order, and what a client must then see (``EXPECTED``)."""
SMOKE_STEPS = ("back 1 h", "forward 15 days", "back to true")
EXPECTED = {
    # A session made "in the future" is still the same session; a trial still runs.
    "back 1 h": {"session": 200, "write": 201},
    # Within the idle timeout (60 min).
    "forward 30 min": {"session": 200, "write": 201},
    # Past the session's absolute lifetime (12 h): it ends, as it would have on time.
    "forward 13 h": {"session": 401, "write": 201},
    # Past the trial's end (14 days): the clinic is read-only, reads go on.
    "forward 15 days": {"session": 401, "write": 402},
    # The clock corrected: the trial runs again; the session, made before, lives its life.
    "back to true": {"session": 200, "write": 201},
}


async def test_the_clock_stepped_forward_and_back_sessions_trials_and_lockouts_follow(
    stepped: tuple[LiveServer, Clock], chaos: Outcome
) -> None:
    live, clock = stepped
    rounds = 1 if smoke() else 3
    # Smoke: one step back, one past both lifetimes, and back; full: every step.
    steps = {k: STEPS[k] for k in SMOKE_STEPS} if smoke() else STEPS
    seen: list[dict[str, Any]] = []
    async with new_clinic(live.url, live.database.superuser_url) as clinic:
        session = await _session(live, clinic.email)
        stranger = f"locked-{uuid.uuid4().hex[:10]}@example.com"
        async with httpx.AsyncClient(base_url=live.url, timeout=REQUEST_TIMEOUT) as http:
            for _ in range(2):  # the lock-out's threshold
                await http.post(**login_request(stranger, "a wrong password"))
        try:
            for _ in range(rounds):
                for name, offset in steps.items():
                    took = await clock.step_seen_by(live.url, offset)
                    started = time.monotonic()
                    observed = await _observe(live, clinic, session, stranger)
                    seen.append(
                        {
                            "step": name,
                            **observed,
                            "seen_after_seconds": round(took, 2),
                            "observed_in_seconds": round(time.monotonic() - started, 2),
                        }
                    )
        finally:
            clock.step("+0")
    chaos.details.update(steps=seen)

    statuses = ("session", "write", "read", "locked_login", "ready")
    server_errors = [s for s in seen if any(s[k] >= 500 for k in statuses)]
    assert not server_errors, server_errors
    for observed in seen:
        expected = EXPECTED[observed["step"]]
        assert {k: observed[k] for k in expected} == expected, observed
        assert observed["read"] == 200, observed
        assert observed["ready"] == 200, observed
        # Locked for its duration by Redis's count, whatever this host's clock says.
        assert observed["locked_login"] == 429, observed
        assert 0 < observed["lock_retry_after"] <= LOCKOUT_MINUTES * 60, observed
