"""The load stage: how long and how hard (``VETIFY_SUITE_LENGTH``), and a token to load with."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import pytest

from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness.live import LiveServer

Length = Literal["smoke", "full"]
SESSION_COOKIE = "vetify_session"


def suite_length() -> Length:
    """``VETIFY_SUITE_LENGTH``: "smoke" (every CI run, seconds) or "full" (nightly, default)."""
    value = os.environ.get("VETIFY_SUITE_LENGTH", "").strip().lower() or "full"
    if value not in ("smoke", "full"):
        raise pytest.UsageError(f"VETIFY_SUITE_LENGTH={value!r}: use 'smoke' or 'full'")
    return value  # type: ignore[return-value]


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
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        login = http.post(
            "/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": DEMO_PASSWORD}
        )
        assert login.status_code == 200, login.text
        # The cookie is Secure and the live server speaks plain http on loopback: send it by hand.
        cookie = login.cookies[SESSION_COOKIE]
        http.cookies.clear()
        created = http.post(
            "/api/v1/auth/tokens",
            json={"name": "load test"},
            headers={"Cookie": f"{SESSION_COOKIE}={cookie}"},
        )
        assert created.status_code == 201, created.text
        token: str = created.json()["token"]
        return token
