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

import httpx

from app.db.embedded import free_port
from tests.harness.databases import APP_ROLE, Database
from tests.harness.proxy import FaultProxy


@dataclass
class LiveServer:
    database: Database
    db_proxy: FaultProxy
    redis_url: str | None = None
    port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="vetify-live-", suffix=".log")[1])
    )
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        via_proxy = (
            f"postgresql+asyncpg://{APP_ROLE}@127.0.0.1:{self.db_proxy.port}/{self.database.name}"
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VETIFY_")},
            "VETIFY_DATABASE_URL": via_proxy,
            "VETIFY_DATABASE_OWNER_URL": self.database.owner_url,
            "VETIFY_DB_STATEMENT_TIMEOUT_MS": "5000",
        }
        env.pop("DATABASE_URL", None)
        if self.redis_url:
            env["VETIFY_REDIS_URL"] = self.redis_url
        return env

    def start(self, timeout: float = 60.0) -> LiveServer:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own command
                [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
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

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
