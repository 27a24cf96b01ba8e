"""Production refuses to start on an unsafe configuration: the settings' own checks, and
PostgreSQL asked what the service's role may do. Messages name settings, never values."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.db.embedded import free_port
from app.main import create_app
from app.settings import ConfigurationError, Environment, Settings
from tests.harness.databases import Database
from tests.harness.services import PostgresServer, RedisServer

# Stripe's secrets and a key-encryption key, drawn per run: production requires them.
REQUIRED = {
    # pragma: allowlist nextline secret - random per run, in Stripe's shape
    "VETIFY_STRIPE_API_KEY": "sk_test_" + secrets.token_hex(16),
    # pragma: allowlist nextline secret - random per run, in Stripe's shape
    "VETIFY_STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(16),
    "VETIFY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
}
PRODUCTION = {
    "env": Environment.production,
    "public_url": "https://vetify.example",
    **{name.removeprefix("VETIFY_").lower(): value for name, value in REQUIRED.items()},
}


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
async def role(postgres_server: PostgresServer) -> AsyncIterator[tuple[str, str]]:
    """A login role of this test's own (name, password); the test says what it may do."""
    name = f"vetify_probe_{uuid.uuid4().hex[:12]}"
    password = secrets.token_hex(16)
    admin = await asyncpg.connect(_plain(postgres_server.url()))
    try:
        await admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        yield name, password
        await admin.execute(f'DROP ROLE "{name}"')
    finally:
        await admin.close()


async def _alter(server: PostgresServer, statement: str) -> None:
    admin = await asyncpg.connect(_plain(server.url()))
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def _start(settings: Settings) -> FastAPI:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        return app


@pytest.mark.parametrize("attribute", ["SUPERUSER", "BYPASSRLS"])
async def test_production_refuses_a_role_that_escapes_row_level_security(
    database: Database, postgres_server: PostgresServer, role: tuple[str, str], attribute: str
) -> None:
    name, password = role
    # The name is innocent: only asking PostgreSQL finds out.
    await _alter(postgres_server, f'ALTER ROLE "{name}" {attribute}')
    url = f"postgresql+asyncpg://{name}:{password}@{postgres_server.host}:{postgres_server.port}"
    settings = Settings(**PRODUCTION, database_url=f"{url}/{database.name}")
    with pytest.raises(ConfigurationError) as info:
        await _start(settings)
    assert list(info.value.problems) == ["database_url"]
    assert attribute in str(info.value).upper().replace(" ", "").replace("-", "")
    assert password not in str(info.value)
    assert name not in str(info.value)


async def test_production_starts_as_the_service_role(database: Database) -> None:
    settings = Settings(**PRODUCTION, database_url=database.app_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://testserver"
        ) as client,
    ):
        assert (await client.get("/health/ready")).status_code == 200


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VETIFY_")}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_vetify_serve_names_every_unsafe_setting_and_no_secret(tmp_path) -> None:
    weak = "changeme"
    short = secrets.token_hex(5)
    (tmp_path / "owner").write_text(f"postgresql+asyncpg://vetify_owner:{short}@db/vetify\n")
    done = _serve(
        {
            "VETIFY_ENV": "production",
            "VETIFY_DEBUG": "true",
            "VETIFY_SESSION_COOKIE_SECURE": "false",
            "VETIFY_PUBLIC_URL": "http://vetify.example",
            "VETIFY_REDIS_URL": f"redis://:{weak}@cache.internal:6379/0",
            "VETIFY_DATABASE_OWNER_URL_FILE": str(tmp_path / "owner"),
            "VETIFY_DATA_DIR": str(tmp_path / "state"),
        }
    )
    assert done.returncode != 0
    for name in (
        "VETIFY_DATABASE_URL",
        "VETIFY_STRIPE_API_KEY",
        "VETIFY_STRIPE_WEBHOOK_SECRET",
        "VETIFY_ENCRYPTION_KEYS",
        "VETIFY_DEBUG",
        "VETIFY_SESSION_COOKIE_SECURE",
        "VETIFY_PUBLIC_URL",
        "VETIFY_REDIS_URL",
        "VETIFY_DATABASE_OWNER_URL",
    ):
        assert f"{name}:" in done.stderr
    assert weak not in done.stderr + done.stdout
    assert short not in done.stderr + done.stdout
    assert "input_value" not in done.stderr
    # A security event (text: the settings could not say json), naming no value either.
    assert "event=production_settings_refused" in done.stdout
    assert not (tmp_path / "state").exists(), "no embedded database is started in production"


@pytest.mark.parametrize("workers", [1, 2])
async def test_vetify_serve_refuses_a_superuser_and_says_so_without_the_url(
    database: Database,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    role: tuple[str, str],
    workers: int,
) -> None:
    """Refused by the app's start-up (its lifespan asks PostgreSQL), in one process or in each
    worker: then the supervisor stops the others and the command fails, naming the worker."""
    name, password = role
    await _alter(postgres_server, f'ALTER ROLE "{name}" SUPERUSER')
    host = f"{postgres_server.host}:{postgres_server.port}"
    done = _serve(
        {
            "VETIFY_ENV": "production",
            "VETIFY_PUBLIC_URL": "https://vetify.example",
            "VETIFY_DATABASE_URL": f"postgresql+asyncpg://{name}:{password}@{host}/{database.name}",
            "VETIFY_WORKERS": str(workers),
            "VETIFY_REDIS_URL": redis_server.url,
            **REQUIRED,
        }
    )
    assert done.returncode != 0
    said = done.stderr.strip().splitlines()
    # Refused in words, not with the ASGI server's traceback: a line names the setting.
    why = "VETIFY_DATABASE_URL: connects as a superuser role"
    if workers == 1:
        assert said[-1].strip().startswith(why)
    else:
        assert any(line.startswith("vetify serve: worker ") for line in said), said
        assert any(line.strip().startswith(why) for line in said), said
        assert said[-1].startswith("vetify serve: worker "), said
        assert said[-1].endswith("exited before serving (exit code 1)"), said
    assert "Traceback" not in done.stderr + done.stdout
    assert password not in done.stderr + done.stdout
    assert redis_server.password not in done.stderr + done.stdout
    # Production logs JSON lines on stdout, the refusal among them as a security event.
    logged = [json.loads(line) for line in done.stdout.splitlines()]
    refusals = [line for line in logged if line.get("event") == "production_settings_refused"]
    assert refusals, logged
    assert all(line["settings"] == ["database_url"] for line in refusals)
