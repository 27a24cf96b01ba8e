"""Ephemeral services for the test stages: containers when a Docker engine answers, else local.

Every stage gets fresh instances; nothing here ever touches a developer's own database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.db.embedded import EmbeddedPostgres, free_port

Provider = Literal["containers", "local"]
POSTGRES_IMAGE = "postgres:18.1-alpine"


class ServiceUnavailableError(RuntimeError):
    """A service the tests need cannot be started; the message says how to install it."""


def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def choose_provider() -> Provider:
    forced = os.environ.get("VETIFY_TEST_SERVICES", "").strip()
    if forced in ("containers", "local"):
        return forced  # type: ignore[return-value]
    if forced:
        raise ServiceUnavailableError(
            f"VETIFY_TEST_SERVICES={forced!r}: use 'containers' or 'local' (or leave it unset)"
        )
    return "containers" if docker_answers() else "local"


@dataclass(frozen=True)
class PostgresServer:
    """A server we hold the superuser of (asyncpg URL, no database part)."""

    host: str
    port: int
    superuser: str
    password: str = ""

    def url(self, user: str | None = None, database: str = "postgres") -> str:
        who = user or self.superuser
        secret = f":{self.password}" if self.password and who == self.superuser else ""
        return f"postgresql+asyncpg://{who}{secret}@{self.host}:{self.port}/{database}"


@contextmanager
def postgres(provider: Provider) -> Iterator[PostgresServer]:
    if provider == "containers":
        with _postgres_container() as server:
            yield server
        return
    root = Path(tempfile.mkdtemp(prefix="vetify-test-pg-"))
    server = EmbeddedPostgres(root / "data", port=free_port(), fast_unsafe=True)
    try:
        server.start()
        yield PostgresServer("127.0.0.1", server.port or 0, "postgres")
    finally:
        server.destroy()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _postgres_container() -> Iterator[PostgresServer]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError as exc:
        raise ServiceUnavailableError(
            "the containers provider needs testcontainers: pip install 'testcontainers>=4.15'"
            " (or set VETIFY_TEST_SERVICES=local)"
        ) from exc
    # Trust auth inside the throwaway container, as the local provider does, so the service
    # roles created by the tests need no passwords.
    container = PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="postgres", driver=None
    )
    container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
    with container:
        yield PostgresServer(
            container.get_container_host_ip(),
            int(container.get_exposed_port(5432)),
            "postgres",
            "postgres",
        )
