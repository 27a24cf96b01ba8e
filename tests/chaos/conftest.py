"""The chaos stage: faults put on the live server's database, its network and Redis.

* ``VETIFY_SUITE_LENGTH``: "smoke" keeps the stage under ~90 s; "full" (default) runs each
  fault longer and more times.
* Every scenario takes the ``chaos`` fixture and fills in ``chaos.details``; its outcome is
  appended to reports/chaos.json, written whole at the end of the session.
* ``faults_restored`` (autouse) starts each scenario from a ready service and, whatever
  happened, takes every fault away again and waits until the service is ready before the next.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db.session import unresponsive_within
from app.settings import Settings, env_name
from tests.harness.api import PROBLEM_JSON
from tests.harness.live import LiveServer, suite_length
from tests.harness.services import PostgresServer, RedisServer, redis_ping

REQUEST_TIMEOUT = 15.0
"""No answer within this is a hang: the service must answer, if only with a 503."""
SLACK = 1.5
"""Seconds a budget is widened by, for a shared, noisy machine."""

_outcomes_key = pytest.StashKey[list[dict[str, Any]]]()


def smoke() -> bool:
    return suite_length() == "smoke"


# -- reports/chaos.json ---------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: str
    details: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Outcome:
    """The scenario's record: the test names what it measured in ``details``."""
    return Outcome(scenario=_scenario(request.node.name))


def _scenario(test_name: str) -> str:
    return test_name.removeprefix("test_")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    record: Outcome = getattr(item, "funcargs", {}).get("chaos") or Outcome(_scenario(item.name))
    outcomes = item.config.stash.setdefault(_outcomes_key, [])
    if report.when == "teardown" and report.failed and outcomes:
        # The scenario's clean-up failed (a fault not put right): the scenario did not pass.
        outcomes[-1].update(passed=False, teardown_error=report.longreprtext[-2000:])
    # One entry per scenario: its call, or the setup that kept it from running.
    if not (report.when == "call" or (report.when == "setup" and report.failed)):
        return
    entry: dict[str, Any] = {
        "scenario": record.scenario,
        "passed": report.passed,
        "length": suite_length(),
        "seconds": round(report.duration, 1),
        "details": record.details,
    }
    if report.failed:
        entry["error"] = str(call.excinfo.value)[:2000] if call.excinfo else report.longreprtext
    outcomes.append(entry)


def _report_path(config: pytest.Config) -> Path:
    return config.rootpath / "reports" / "chaos.json"


@pytest.fixture(scope="session", autouse=True)
def _no_stale_chaos_report(pytestconfig: pytest.Config) -> None:
    """A report from an earlier run must not pass for this one's if this one dies early."""
    _report_path(pytestconfig).unlink(missing_ok=True)
    pytestconfig.stash.setdefault(_outcomes_key, [])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """After the last teardown, so a scenario whose clean-up failed is recorded as failed."""
    outcomes = session.config.stash.get(_outcomes_key, None)
    if outcomes is None:  # no chaos scenario was set up in this session
        return
    path = _report_path(session.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outcomes, indent=2, default=str) + "\n")


# -- the live server, and putting every fault right -----------------------------------------------
async def wait_until_ready(url: str, within: float = 60.0) -> float:
    """Seconds until /health/ready answers 200."""
    started = time.monotonic()
    last: object = None
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while time.monotonic() - started < within:
            try:
                response = await http.get("/health/ready")
                if response.status_code == 200:
                    return time.monotonic() - started
                last = (response.status_code, response.text[:200])
            except httpx.TransportError as exc:
                last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} was not ready within {within}s (last: {last!r})")


@pytest.fixture
async def faults_restored(
    live_server: LiveServer, postgres_server: PostgresServer, redis_server: RedisServer
) -> AsyncIterator[None]:
    postgres, redis = postgres_server.control, redis_server.control
    assert postgres is not None
    assert redis is not None
    await wait_until_ready(live_server.url)
    yield
    live_server.db_proxy.latency = 0.0
    live_server.db_proxy.refuse = False
    try:
        postgres.resume()  # SIGCONT: nothing happens to a server that runs
        redis.resume()
    finally:
        if not await redis_answers(redis_server):
            await asyncio.to_thread(redis.start)
    assert live_server.running, "the live server died during the scenario"
    await wait_until_ready(live_server.url)


async def redis_answers(server: RedisServer) -> bool:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(server.host, server.port), 2
        )
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(redis_ping(server.password))
        received = b""
        while b"PONG" not in received and len(received) < 64:
            chunk = await asyncio.wait_for(reader.read(64), 2)
            if not chunk:
                break
            received += chunk
        return b"+PONG" in received
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


@dataclass(frozen=True)
class Budgets:
    """Seconds within which the live server must answer while its database does not, from its
    own settings (README, Health and timeouts), plus ``SLACK``."""

    request: float
    ready: float


@pytest.fixture(scope="session")
def budgets(live_server: LiveServer) -> Budgets:
    env = live_server.env()
    # The timing settings the process was given (it reads the same variables); others default.
    given = {
        name: env[env_name(name)]
        for name in Settings.model_fields
        if name.startswith(("db_", "ready_")) and env_name(name) in env
    }
    settings = Settings(**given)
    return Budgets(
        request=unresponsive_within(settings) + SLACK,
        ready=settings.ready_timeout_seconds + SLACK,
    )


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults(faults_restored: None) -> None:
    """Autouse wrapper, so a scenario cannot forget the clean-up."""


@pytest.fixture(scope="session")
async def api_token(live_server: LiveServer) -> str:
    """An API token of the demo clinic's owner."""
    await wait_until_ready(live_server.url)
    return live_server.demo_token("chaos test")


@pytest.fixture
async def api(live_server: LiveServer, api_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API as the demo clinic's owner; a request without an answer in time is an error."""
    async with httpx.AsyncClient(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {api_token}"},
        timeout=REQUEST_TIMEOUT,
        limits=httpx.Limits(max_connections=20),
    ) as http:
        yield http


def is_unavailable_problem(response: httpx.Response) -> bool:
    """A 503 problem+json telling the client when to retry."""
    return (
        response.status_code == 503
        and response.headers.get("content-type", "").startswith(PROBLEM_JSON)
        and response.json().get("status") == 503
        and response.headers.get("retry-after", "").isdigit()
    )


async def call(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request, summarised; a transport failure or timeout is an outcome, not an exception."""
    started = time.monotonic()
    try:
        response = await api.request(method, path, **kwargs)
    except httpx.TimeoutException:
        return {"kind": "timeout", "seconds": time.monotonic() - started}
    except httpx.TransportError as exc:
        return {"kind": f"transport: {exc!r}", "seconds": time.monotonic() - started}
    if is_unavailable_problem(response):
        kind = "503 problem"
    elif response.status_code == 503 and "retry-after" not in response.headers:
        kind = f"503 {response.headers.get('content-type')} without Retry-After"
    elif response.status_code < 300:
        kind = str(response.status_code)
    else:
        kind = f"{response.status_code} {response.headers.get('content-type')}"
    return {
        "kind": kind,
        "status": response.status_code,
        "seconds": time.monotonic() - started,
        "body": response.json() if "json" in response.headers.get("content-type", "") else None,
        "headers": dict(response.headers),
    }
