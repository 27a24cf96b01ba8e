"""/health/dependencies and `vetify check`: every dependency reported up when it is, down (or
degraded) when it is not, within the probe's bound even when one hangs; operators only."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.db.embedded import free_port
from app.observability import dependencies
from app.settings import Settings, StorageBackend
from tests.harness import canary
from tests.harness.api import assert_problem
from tests.harness.plugin import asgi_client
from tests.harness.s3 import ACCESS_KEY, REGION, SECRET_KEY

TOKEN = canary.OPERATOR_TOKEN  # the stage's settings hold it
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def silent() -> Iterator[str]:
    """``host:port`` of a server that takes connections and never says a word (a hung daemon)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def _everything(s3, clamd, bucket: str) -> dict[str, Any]:
    return {
        "operator_token": SecretStr(TOKEN),
        "clamd_address": clamd.address,
        "storage_backend": StorageBackend.s3,
        "s3_bucket": s3.new_bucket(bucket),
        "s3_endpoint_url": s3.endpoint_url,
        "s3_region": REGION,
        "s3_access_key_id": SecretStr(ACCESS_KEY),
        "s3_secret_access_key": SecretStr(SECRET_KEY),
    }


async def _report(app: Any) -> dict[str, Any]:
    async with asgi_client(app) as client:
        response = await client.get("/health/dependencies", headers=OPERATOR)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def _until_worker_seen(app: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (found := await _report(app))["dependencies"]["worker"]["status"] != "ok":
        assert time.monotonic() < deadline, f"the worker's heartbeat never came: {found}"
        await asyncio.sleep(0.2)
    return found


async def test_everything_up_is_reported_ok_with_latencies(configured_app, s3, clamd, stripe):
    async with configured_app(**_everything(s3, clamd, "deps-up"), jobs_in_process=True) as app:
        found = await _until_worker_seen(app)
    assert found["status"] == "ok"
    deps = found["dependencies"]
    assert list(deps) == [
        "database",
        "redis",
        "worker",
        "queue",
        "stripe",
        "smtp",
        "s3",
        "clamd",
    ]
    for name, finding in deps.items():
        assert finding["status"] == "ok", (name, finding)
        assert 0 <= finding["latency_ms"] < 3000
    assert deps["database"]["required"]
    assert deps["worker"]["required"]
    assert not deps["redis"]["required"]
    assert "last seen" in deps["worker"]["detail"]
    assert stripe.calls("GET", "/v1/customers/")


async def test_without_an_operator_token_the_route_does_not_exist(configured_app):
    async with configured_app(operator_token=None) as app, asgi_client(app) as client:
        response = await client.get("/health/dependencies", headers=OPERATOR)
    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"],
    # Named, not shown: the token is the run's canary (each xdist worker collects the same ids).
    ids=["none", "wrong-token", "basic-scheme", "token-and-more"],
)
async def test_anyone_but_an_operator_is_refused(configured_app, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    async with configured_app(operator_token=TOKEN) as app, asgi_client(app) as client:
        response = await client.get("/health/dependencies", headers=headers)
    assert_problem(response, 401, "unauthenticated")


async def test_each_dependency_down_is_reported_down(configured_app, redis_server, stripe):
    assert redis_server.control is not None
    nowhere = f"127.0.0.1:{free_port()}"
    down = {
        "operator_token": TOKEN,
        "smtp_port": free_port(),
        "clamd_address": nowhere,
        "stripe_api_base": f"http://{nowhere}",
        "storage_backend": StorageBackend.s3,
        "s3_bucket": "no-such-bucket",
        "s3_endpoint_url": f"http://{nowhere}",
        "s3_region": REGION,
    }
    async with configured_app(**down) as app:  # and no job worker
        redis_server.control.stop()
        try:
            found = await _report(app)
        finally:
            redis_server.control.start()
    deps = found["dependencies"]
    for name in ("redis", "worker", "stripe", "smtp", "s3", "clamd"):
        assert deps[name]["status"] == "down", (name, deps[name])
    assert deps["worker"]["detail"] == "no job worker is running"
    assert deps["database"]["status"] == "ok"
    assert found["status"] == "down"  # the worker is required
    assert nowhere.encode() not in json.dumps(found).encode()  # classes named, not addresses


async def test_the_database_down_is_reported_down():
    nowhere = f"postgresql+asyncpg://vetify_app@127.0.0.1:{free_port()}/vetify"
    from app.main import create_app

    app = create_app(Settings(database_url=nowhere, operator_token=TOKEN))
    async with app.router.lifespan_context(app):
        found = await _report(app)
    assert found["status"] == "down"
    assert found["dependencies"]["database"]["status"] == "down"
    assert found["dependencies"]["redis"]["status"] == "not_configured"
    assert found["dependencies"]["redis"]["latency_ms"] is None


async def test_a_hung_dependency_is_cut_at_the_deadline(configured_app, silent):
    changes = {"operator_token": TOKEN, "clamd_address": silent, "smtp_host": "127.0.0.1"}
    changes["smtp_port"] = int(silent.rpartition(":")[2])
    async with configured_app(**changes, ready_timeout_seconds=1.0) as app:
        started = time.monotonic()
        found = await _report(app)
        took = time.monotonic() - started
    assert took < 1.5
    for name in ("clamd", "smtp"):
        assert found["dependencies"][name]["status"] == "down"
        assert found["dependencies"][name]["detail"] == "no answer within 0.8 s"


async def test_stripe_is_asked_once_per_cache_period(configured_app, stripe):
    async with configured_app(operator_token=TOKEN, stripe_probe_cache_seconds=3600) as app:
        first, second = await _report(app), await _report(app)
    assert first["dependencies"]["stripe"]["status"] == "ok"
    assert second["dependencies"]["stripe"]["status"] == "ok"
    assert len(stripe.calls("GET", "/v1/customers/")) == 1


async def test_a_queue_falling_behind_is_degraded(configured_app, database):
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.begin() as connection:
            job = await connection.scalar(
                text(
                    "INSERT INTO procrastinate_jobs (queue_name, task_name)"
                    " VALUES ('mail', 'auth.mail_email_verification') RETURNING id"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO procrastinate_events (job_id, type, at)"
                    " VALUES (:id, 'deferred', now() - interval '5 minutes')"
                ),
                {"id": job},
            )
    finally:
        await owner.dispose()
    async with configured_app(operator_token=TOKEN) as app:
        found = await _report(app)
    queue = found["dependencies"]["queue"]
    assert queue["status"] == "degraded"
    # Five minutes, and the seconds the app took to start since (301 s was seen in CI).
    waited = re.fullmatch(r"oldest waiting job: (\d+) s", queue["detail"])
    assert waited is not None, queue["detail"]
    assert 300 <= int(waited.group(1)) < 330


# -- `vetify check` -------------------------------------------------------------------------------
@pytest.fixture
async def heartbeat(database) -> AsyncIterator[None]:
    """A job worker's heartbeat, as procrastinate's worker registers it."""
    engine = create_async_engine(database.app_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT procrastinate_register_worker_v1()"))
        yield
    finally:
        await engine.dispose()


def _environment(monkeypatch: pytest.MonkeyPatch, settings: Settings, **more: str) -> None:
    for name, value in {
        "DATABASE_URL": settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        "REDIS_URL": settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        "SMTP_HOST": settings.smtp_host,
        "SMTP_PORT": str(settings.smtp_port),
        "STRIPE_API_KEY": canary.STRIPE_KEY,
        "STRIPE_API_BASE": settings.stripe_api_base,
        **more,
    }.items():
        monkeypatch.setenv(f"VETIFY_{name}", str(value))


async def test_vetify_check_prints_the_report_and_passes(
    monkeypatch, settings, heartbeat, stripe, capsys
):
    _environment(monkeypatch, settings)
    await asyncio.to_thread(cli.main, ["check", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "ok"
    assert printed["dependencies"]["worker"]["status"] == "ok"
    assert printed["dependencies"]["clamd"]["status"] == "not_configured"

    await asyncio.to_thread(cli.main, ["check"])
    table = capsys.readouterr().out
    assert "database*  ok" in table
    assert table.rstrip().endswith("overall: ok  (* required)")


async def test_vetify_check_fails_when_a_required_dependency_is_down(
    monkeypatch, settings, stripe, capsys
):
    _environment(monkeypatch, settings)  # no worker has ever run on this database
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(cli.main, ["check"])
    assert exit_.value.code == 1
    assert "no job worker is running" in capsys.readouterr().out


def test_vetify_check_needs_a_configured_database(monkeypatch):
    monkeypatch.delenv("VETIFY_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit, match="VETIFY_DATABASE_URL"):
        cli.main(["check"])


def test_a_probe_that_fails_oddly_is_down_by_its_class_only():
    async def odd() -> None:
        raise ValueError(f"postgresql://vetify:{canary.ROLE_PASSWORD}@db.internal/vetify")

    found = asyncio.run(dependencies.report([dependencies.Check("odd", odd)], 1.0))
    assert found.findings["odd"].status is dependencies.Status.down
    assert found.findings["odd"].detail == "ValueError"


async def test_a_cached_probe_keeps_a_failure_until_it_expires():
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise dependencies.Unhealthy("refused")

    cached = dependencies.Cached(failing, seconds=3600)
    for _ in range(2):
        with pytest.raises(dependencies.Unhealthy):
            await cached()
    assert len(calls) == 1


async def test_stripe_refusing_the_probe_is_down(configured_app, stripe):
    stripe.fail_next(3, 400, path_prefix="/v1/customers/")
    async with configured_app(operator_token=TOKEN, stripe_probe_cache_seconds=0) as app:
        found = await _report(app)
    assert found["dependencies"]["stripe"] == {
        "status": "down",
        "required": False,
        "latency_ms": found["dependencies"]["stripe"]["latency_ms"],
        "detail": "InvalidRequestError",
    }


async def test_a_clamd_that_does_not_answer_pong_is_down(configured_app):
    async def odd_daemon(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        writer.write(b"UNKNOWN COMMAND\0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(odd_daemon, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, configured_app(operator_token=TOKEN, clamd_address=address) as app:
        found = await _report(app)
    assert found["dependencies"]["clamd"]["status"] == "down"
    assert found["dependencies"]["clamd"]["detail"] == "ScannerUnavailable"
