"""The system under test as a real process: `vetify serve` on a free port, its database
reached through a :class:`FaultProxy`. E2E, load and chaos runs all start it this way; the
lifecycle chaos suite also starts :class:`Vetify` commands of its own (`serve` on an embedded
database, `worker`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import httpx

from app.db.embedded import free_port
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness import canary
from tests.harness.api import login_sync, token_by_session_sync
from tests.harness.databases import APP_ROLE, Database
from tests.harness.proxy import FaultProxy

Length = Literal["smoke", "full"]
T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
"""The checkout under test: `python -m app.cli` started here imports this checkout's code, not
whichever one the virtual environment was installed from."""


def suite_length() -> Length:
    """``VETIFY_SUITE_LENGTH``: "smoke" (every CI run, seconds) or "full" (nightly, default)."""
    value = os.environ.get("VETIFY_SUITE_LENGTH", "").strip().lower() or "full"
    if value not in ("smoke", "full"):
        raise ValueError(f"VETIFY_SUITE_LENGTH={value!r}: use 'smoke' or 'full'")
    return value  # type: ignore[return-value]


def until(what: str, check: Callable[[], T], within: float = 60.0, every: float = 0.05) -> T:
    """Poll ``check`` until it answers something true, and return that; fail naming ``what``
    after ``within`` seconds (for what a process does in its own time)."""
    deadline = time.monotonic() + within
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(every)
    return value


def vetify_command(*args: str) -> list[str]:
    """`vetify ARGS` as this checkout's code (the tests' working directory is the repository)."""
    return [sys.executable, "-m", "app.cli", *args]


def vetify_env(**settings: str) -> dict[str, str]:
    """The environment of a `vetify` process: this one's, less every setting it might carry
    (``VETIFY_*``, ``OTEL_*``, ``DATABASE_URL``, ``REDIS_URL``), in the test environment (no
    ``.env`` read), with ``settings`` added."""
    inherited = {
        key: value
        for key, value in os.environ.items()
        # OTEL_*: a developer's tracing set-up traces only where a test asks for it.
        if not key.startswith(("VETIFY_", "OTEL_")) and key not in ("DATABASE_URL", "REDIS_URL")
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


def _log_file() -> Path:
    return Path(tempfile.mkstemp(prefix="vetify-live-", suffix=".log")[1])


class Exit(NamedTuple):
    code: int
    seconds: float
    """From the last signal (or the start) until the process had exited."""


@dataclass
class Vetify:
    """One `vetify` command as a real process (``python -m app.cli ...``), its stdout and stderr
    in ``log_path``."""

    args: list[str]
    env: dict[str, str]
    log_path: Path = field(default_factory=_log_file)
    process: subprocess.Popen[bytes] | None = None
    since: float = 0.0
    """When it was started or last signalled (``time.monotonic``): what :meth:`exit` times."""

    def start(self) -> Vetify:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own command
                vetify_command(*self.args),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.since = time.monotonic()
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def wait_for(self, text: str, within: float = 60.0) -> None:
        """Until ``text`` appears in the output; an error if the process exits first."""
        deadline = time.monotonic() + within
        while text not in self.output:
            if not self.running:
                raise AssertionError(f"exited before {text!r}:\n{self.output[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {within}s:\n{self.output[-4000:]}")
            time.sleep(0.05)

    def wait_until_ready(self, url: str, within: float = 60.0) -> None:
        """Until ``url``/health/ready answers 200; an error if the process exits first."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"exited before it was ready:\n{self.output[-4000:]}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready within {within}s:\n{self.output[-4000:]}")

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None, "not started"
        self.since = time.monotonic()
        self.process.send_signal(signum)

    def exit(self, within: float) -> Exit:
        """Wait for the process to end; one still running ``within`` s after the last signal
        (or the start) is killed, and that is an error."""
        assert self.process is not None, "not started"
        try:
            code = self.process.wait(max(0.0, self.since + within - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"still running {within}s on; killed:\n{self.output[-4000:]}"
            ) from None
        return Exit(code, time.monotonic() - self.since)

    def stop(self, within: float = 30.0) -> None:
        """Clean-up whatever the test did: SIGTERM, and SIGKILL if it outlives ``within``."""
        if self.running:
            self.send(signal.SIGTERM)
            with contextlib.suppress(AssertionError):  # killed: what clean-up wants
                self.exit(within)


def api_token(url: str, name: str, email: str, password: str) -> str:
    """An API token of the member ``email`` logs in as at ``url``, obtained as an integration
    would."""
    with httpx.Client(base_url=url, timeout=30) as http:
        login = login_sync(http, email, password)
        assert login.status_code == 200, login.text
        created = token_by_session_sync(http, login, url, name)
        assert created.status_code == 201, created.text
        token: str = created.json()["token"]
        return token


@dataclass
class LiveServer:
    database: Database
    db_proxy: FaultProxy | None
    """Between the server and its database, for the chaos suites' faults (none: direct)."""
    redis_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """More ``VETIFY_*`` environment for the process: a test configures the server it needs."""
    port: int = field(default_factory=free_port)
    log_path: Path = field(default_factory=_log_file)
    serve: Vetify | None = None

    def demo_token(self, name: str) -> str:
        """An API token of the demo clinic's owner, obtained as an integration would."""
        return self.token(name, DEMO_EMAIL, DEMO_PASSWORD)

    def token(self, name: str, email: str, password: str) -> str:
        return api_token(self.url, name, email, password)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        password = self.database.server.role_password
        url = self.database.app_url
        if self.db_proxy is not None:
            url = (
                f"postgresql+asyncpg://{APP_ROLE}:{password}@127.0.0.1:{self.db_proxy.port}"
                f"/{self.database.name}"
            )
        env = vetify_env(
            VETIFY_DATABASE_URL=url,
            VETIFY_DATABASE_OWNER_URL=self.database.owner_url,
            VETIFY_DB_STATEMENT_TIMEOUT_MS="5000",
            # Load and chaos send far more than one clinic does; the limits still run, wider.
            VETIFY_RATE_LIMIT_SCALE="1000",
            # Its own address: pages served from it are the ones its CSRF check trusts.
            VETIFY_PUBLIC_URL=self.url,
            # What the tests' own sessions seal with (tests/harness/canary.py).
            VETIFY_ENCRYPTION_KEYS=canary.ENCRYPTION_KEYRING,
        )
        if self.redis_url:
            env["VETIFY_REDIS_URL"] = self.redis_url
        return {**env, **self.settings}

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.serve = Vetify(["serve", "--port", str(self.port)], self.env(), self.log_path)
        try:
            self.serve.start().wait_until_ready(self.url, timeout)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(f"vetify serve did not start: {exc}") from None
        return self

    def worker(self) -> Vetify:
        """`vetify worker` on this server's database (through the same proxy), not started."""
        return Vetify(["worker"], self.env())

    def stop(self) -> None:
        if self.serve is not None:
            self.serve.stop()
        self.serve = None
        if self.log_path.exists():
            canary.WATCH.scan(self.log_path.read_text(errors="replace"), "vetify serve's output")

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        return self.serve.process if self.serve is not None else None

    @property
    def running(self) -> bool:
        return self.serve is not None and self.serve.running
