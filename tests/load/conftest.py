"""The load stage: how long and how hard (``VETIFY_SUITE_LENGTH``), and a token to load with."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness.live import Length, LiveServer, suite_length


@dataclass(frozen=True)
class Profile:
    users: int
    spawn_rate: float
    seconds: int
    p95_budget_ms: int


PROFILES: dict[Length, Profile] = {
    "smoke": Profile(users=10, spawn_rate=5, seconds=15, p95_budget_ms=1500),
    "full": Profile(users=50, spawn_rate=2, seconds=300, p95_budget_ms=800),
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


@pytest.fixture(scope="session")
def api_token(live_server: LiveServer) -> str:
    """An API token of the demo clinic's owner, as an integration would hold one."""
    wait_until_ready(live_server.url)
    return live_server.demo_token("load test")
