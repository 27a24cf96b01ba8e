"""Ephemeral services for the test stages: containers when a Docker engine answers, else local.

Every stage gets fresh instances; nothing here ever touches a developer's own database. A
service that cannot be started is an error that says how to install it, never a skip.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from app.db.embedded import EmbeddedPostgres, free_port
from tests.harness import canary

Provider = Literal["containers", "local"]
POSTGRES_IMAGE = "postgres:18.1-alpine"
REDIS_IMAGE = "redis:7.4-alpine"


class ServiceUnavailableError(RuntimeError):
    """A service the tests need cannot be started; the message says how to install it."""


def docker_answers() -> bool:
    # The docker SDK leaves a socket behind when no engine answers; collect it here, where its
    # ResourceWarning is expected, rather than in whichever test happens to run next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


def choose_provider() -> Provider:
    forced = os.environ.get("VETIFY_TEST_SERVICES", "").strip()
    if forced in ("containers", "local"):
        return forced  # type: ignore[return-value]
    if forced:
        raise ServiceUnavailableError(
            f"VETIFY_TEST_SERVICES={forced!r}: use 'containers' or 'local' (or leave it unset)"
        )
    return "containers" if docker_answers() else "local"


@dataclass
class Control:
    """What chaos tests do to a service: stop/start it (data kept), freeze/thaw it, or kill it
    (SIGKILL to every process of it: a crash; ``start`` brings it back, recovering)."""

    stop: Callable[[], object]
    start: Callable[[], object]
    pause: Callable[[], object]
    resume: Callable[[], object]
    kill: Callable[[], object]


@dataclass(frozen=True)
class PostgresServer:
    """A server we hold the superuser of. Every URL carries its role's password, a canary of
    this run (the throwaway servers trust local connections, so it is a tracer, not a lock)."""

    host: str
    port: int
    superuser: str
    password: str = canary.SUPERUSER_PASSWORD
    role_password: str = canary.ROLE_PASSWORD
    control: Control | None = field(default=None, compare=False, repr=False)

    def url(self, user: str | None = None, database: str = "postgres") -> str:
        who = user or self.superuser
        secret = self.password if who == self.superuser else self.role_password
        return f"postgresql+asyncpg://{who}:{secret}@{self.host}:{self.port}/{database}"


@dataclass(frozen=True)
class RedisServer:
    """Requires a password (the run's canary), as production's must."""

    host: str
    port: int
    password: str = canary.REDIS_PASSWORD
    control: Control | None = field(default=None, compare=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"


def _freeze_tree(pid: int) -> None:
    """SIGSTOP to ``pid``, then, once it has stopped and so forks no more, to its children. Listing
    them first would miss a child forked meanwhile (a backend for a new connection), which would
    go on answering through the outage."""
    parent = psutil.Process(pid)
    parent.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while parent.status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.001)
    for process in parent.children(recursive=True):
        process.send_signal(signal.SIGSTOP)


def _thaw_tree(pid: int) -> None:
    """SIGCONT to ``pid``'s children, then to it."""
    parent = psutil.Process(pid)
    for process in [*parent.children(recursive=True), parent]:
        process.send_signal(signal.SIGCONT)


def _kill_tree(pid: int) -> None:
    """SIGKILL to ``pid`` and its children, parent first (so it forks no more), then wait."""
    parent = psutil.Process(pid)
    processes = [parent, *parent.children(recursive=True)]
    for process in processes:
        # A child may be gone already: its postmaster's death ends it (a CI run's flake).
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


# -- PostgreSQL ---------------------------------------------------------------------------------
@contextmanager
def postgres(provider: Provider) -> Iterator[PostgresServer]:
    if provider == "containers":
        with _postgres_container() as server:
            yield server
        return
    root = Path(tempfile.mkdtemp(prefix="vetify-test-pg-"))
    cluster = EmbeddedPostgres(root / "data", port=free_port(), fast_unsafe=True)

    def postmaster() -> int:
        return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])

    control = Control(
        stop=cluster.stop,
        start=cluster.start,
        pause=lambda: _freeze_tree(postmaster()),
        resume=lambda: _thaw_tree(postmaster()),
        kill=lambda: _kill_tree(postmaster()),
    )
    try:
        cluster.start()
        yield PostgresServer("127.0.0.1", cluster.port or 0, "postgres", control=control)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _postgres_container() -> Iterator[PostgresServer]:
    PostgresContainer = _community("postgres", "PostgresContainer")
    # Trust auth inside the throwaway container, as the local provider does, so the service
    # roles created by the tests need no passwords.
    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password=canary.SUPERUSER_PASSWORD, driver=None
    )
    container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
    with container:
        yield PostgresServer(
            container.get_container_host_ip(),
            int(container.get_exposed_port(5432)),
            "postgres",
            "postgres",
            control=_container_control(container),
        )


# -- Redis --------------------------------------------------------------------------------------
@contextmanager
def redis(provider: Provider) -> Iterator[RedisServer]:
    if provider == "containers":
        RedisContainer = _community("redis", "RedisContainer")
        with RedisContainer(REDIS_IMAGE, password=canary.REDIS_PASSWORD) as container:
            yield RedisServer(
                container.get_container_host_ip(),
                int(container.get_exposed_port(6379)),
                control=_container_control(container),
            )
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailableError(
            "redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server;"
            " macOS: brew install redis), or run with a Docker engine"
        )
    root = Path(tempfile.mkdtemp(prefix="vetify-test-redis-"))
    port = free_port()
    process: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        process[:] = [
            subprocess.Popen(  # noqa: S603 - redis-server from PATH with fixed arguments
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(root),
                    "--requirepass",
                    canary.REDIS_PASSWORD,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        _wait_for_redis(port)

    def stop() -> None:
        for running in process:
            running.terminate()
            running.wait(10)

    control = Control(
        stop=stop,
        start=start,
        pause=lambda: process[0].send_signal(signal.SIGSTOP),
        resume=lambda: process[0].send_signal(signal.SIGCONT),
        kill=lambda: _kill_tree(process[0].pid),
    )
    start()
    try:
        yield RedisServer("127.0.0.1", port, control=control)
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)


def redis_ping(password: str = canary.REDIS_PASSWORD) -> bytes:
    """AUTH then PING, inline: a Redis that answers "+OK" then "+PONG" is up."""
    return f"AUTH {password}\r\nPING\r\n".encode()


def _wait_for_redis(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(redis_ping())
                if _answered(sock):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise ServiceUnavailableError(f"redis-server did not answer on port {port} within {timeout}s")


def _answered(sock: socket.socket) -> bool:
    received = b""
    while b"PONG" not in received and len(received) < 64:
        chunk = sock.recv(64)
        if not chunk:
            break
        received += chunk
    return received.startswith(b"+OK") and b"+PONG" in received


# -- containers -----------------------------------------------------------------------------------
def _community(module: str, name: str) -> Any:
    try:
        imported = __import__(f"testcontainers.community.{module}", fromlist=[name])
    except ImportError as exc:
        raise ServiceUnavailableError(
            "the containers provider needs testcontainers: pip install 'testcontainers>=4.15'"
            " (or set VETIFY_TEST_SERVICES=local)"
        ) from exc
    return getattr(imported, name)


def _container_control(container: Any) -> Control:
    wrapped = container.get_wrapped_container()
    return Control(
        stop=wrapped.stop,
        start=wrapped.start,
        pause=wrapped.pause,
        resume=wrapped.unpause,
        kill=wrapped.kill,  # SIGKILL, docker's default
    )
