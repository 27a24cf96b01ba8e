"""The system under test as a real process: `vetify serve` on a free port, its database
reached through a :class:`FaultProxy`. E2E, load and chaos runs all start it this way."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from app.db.embedded import free_port
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness import canary
from tests.harness.api import login_sync, token_by_session_sync
from tests.harness.databases import APP_ROLE, Database
from tests.harness.proxy import FaultProxy

Length = Literal["smoke", "full"]


def suite_length() -> Length:
    """``VETIFY_SUITE_LENGTH``: "smoke" (every CI run, seconds) or "full" (nightly, default)."""
    value = os.environ.get("VETIFY_SUITE_LENGTH", "").strip().lower() or "full"
    if value not in ("smoke", "full"):
        raise ValueError(f"VETIFY_SUITE_LENGTH={value!r}: use 'smoke' or 'full'")
    return value  # type: ignore[return-value]


def vetify_command(*args: str) -> list[str]:
    """`vetify ARGS` as this checkout's code (the tests' working directory is the repository)."""
    return [sys.executable, "-m", "app.cli", *args]


def vetify_env(**settings: str) -> dict[str, str]:
    """The environment of a `vetify` process: this one's, less every setting it might carry
    (``VETIFY_*``, ``DATABASE_URL``, ``REDIS_URL``), in the test environment (no ``.env``
    read), with ``settings`` added."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("VETIFY_") and key not in ("DATABASE_URL", "REDIS_URL")
    }
    return {**inherited, "VETIFY_ENV": "test", **settings}


def run_vetify(
    *args: str, timeout: float = 120, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run `vetify ARGS` to its end with ``settings`` (see :func:`vetify_env`); its output
    is returned, never raised, for the test to judge."""
    return subprocess.run(  # noqa: S603 - our own command
        vetify_command(*args),
        env=vetify_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class LiveServer:
    database: Database
    db_proxy: FaultProxy
    redis_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """More ``VETIFY_*`` environment for the process: a test configures the server it needs."""
    port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="vetify-live-", suffix=".log")[1])
    )
    _process: subprocess.Popen[bytes] | None = None

    def demo_token(self, name: str) -> str:
        """An API token of the demo clinic's owner, obtained as an integration would."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            login = login_sync(http, DEMO_EMAIL, DEMO_PASSWORD)
            assert login.status_code == 200, login.text
            created = token_by_session_sync(http, login, self.url, name)
            assert created.status_code == 201, created.text
            token: str = created.json()["token"]
            return token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        password = self.database.server.role_password
        via_proxy = (
            f"postgresql+asyncpg://{APP_ROLE}:{password}@127.0.0.1:{self.db_proxy.port}"
            f"/{self.database.name}"
        )
        env = vetify_env(
            VETIFY_DATABASE_URL=via_proxy,
            VETIFY_DATABASE_OWNER_URL=self.database.owner_url,
            VETIFY_DB_STATEMENT_TIMEOUT_MS="5000",
            # Load and chaos send far more than one clinic does; the limits still run, wider.
            VETIFY_RATE_LIMIT_SCALE="1000",
            # Its own address: pages served from it are the ones its CSRF check trusts.
            VETIFY_PUBLIC_URL=self.url,
        )
        if self.redis_url:
            env["VETIFY_REDIS_URL"] = self.redis_url
        return {**env, **self.settings}

    def start(self, timeout: float = 60.0) -> LiveServer:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own command
                vetify_command("serve", "--port", str(self.port)),
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"vetify serve exited early:\n{self.log_path.read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"vetify serve was not ready within {timeout}s:\n{self.log_path.read_text()[-4000:]}"
        )

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None
        if self.log_path.exists():
            canary.WATCH.scan(self.log_path.read_text(errors="replace"), "vetify serve's output")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
