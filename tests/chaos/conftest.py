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
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from app.auth.mails import MAIL_PASSWORD_RESET
from app.db.session import unresponsive_within
from app.settings import Settings, env_name
from tests.harness import canary
from tests.harness.api import (
    PROBLEM_JSON,
    SIGNUP_PASSWORD,
    login_sync,
    signup_body,
    signup_sync,
    token_by_session_sync,
)
from tests.harness.billing import PRICES
from tests.harness.clamd import FakeClamd, fake_clamd
from tests.harness.live import LiveServer, suite_length
from tests.harness.mail import PASSWORD_RESET, mails_to
from tests.harness.plugin import serving
from tests.harness.proxy import FaultProxy
from tests.harness.s3 import ACCESS_KEY as S3_ACCESS_KEY
from tests.harness.s3 import REGION as S3_REGION
from tests.harness.s3 import SECRET_KEY as S3_SECRET_KEY
from tests.harness.s3 import S3Server
from tests.harness.services import PostgresServer, RedisServer, redis_ping
from tests.harness.smtp import USERNAME as SMTP_USERNAME
from tests.harness.smtp import Relay
from tests.harness.stripe.server import FakeStripe

T = TypeVar("T")

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


# -- a server whose every dependency is behind a fault proxy ---------------------------------------
DEPENDENCIES = ("redis", "stripe", "smtp", "s3", "clamd")
"""What ``wired_server`` reaches through a proxy of its own, beside its database."""


@dataclass
class Wired:
    """`vetify serve` (jobs in process) configured with Stripe, a mail relay, S3 and clamd, each
    reached through a :class:`FaultProxy` in ``proxies``, as is Redis (and the database, through
    ``live.db_proxy``). The fakes record what reached them: Stripe's requests and idempotency keys,
    the relay's mails, clamd's scans."""

    live: LiveServer
    proxies: dict[str, FaultProxy]
    stripe: FakeStripe
    relay: Relay
    clamd: FakeClamd
    bucket: str

    @property
    def url(self) -> str:
        return self.live.url

    def heal(self) -> None:
        for proxy in (*self.proxies.values(), self.live.db_proxy):
            proxy.heal()


def _proxied_url(url: str, host: str, port: int, proxy: FaultProxy) -> str:
    return url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}", 1)


@pytest.fixture(scope="session")
def wired_server(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    stripe_api: FakeStripe,
    smtp_server: Relay,
    s3: S3Server,
) -> Iterator[Wired]:
    stripe_at = urlsplit(stripe_api.base_url)
    host, port = stripe_at.hostname or "127.0.0.1", stripe_at.port or 80
    with fake_clamd() as clamd, contextlib.ExitStack() as proxies:
        s3_endpoint = urlsplit(s3.endpoint_url)
        targets = {
            "redis": (redis_server.host, redis_server.port),
            "stripe": (host, port),
            "smtp": (smtp_server.host, smtp_server.port),
            "s3": (s3_endpoint.hostname or "127.0.0.1", s3_endpoint.port or 80),
            "clamd": (clamd.host, clamd.port),
        }
        proxy = {name: FaultProxy(*target).start() for name, target in targets.items()}
        for started in proxy.values():
            proxies.callback(started.stop)
        bucket = s3.new_bucket(f"chaos-{uuid.uuid4().hex[:12]}")
        settings = {
            **CHEAP_HASHES,
            "VETIFY_JOBS_IN_PROCESS": "true",
            "VETIFY_REDIS_URL": _proxied_url(
                redis_server.url, redis_server.host, redis_server.port, proxy["redis"]
            ),
            "VETIFY_STRIPE_API_KEY": canary.STRIPE_KEY,
            "VETIFY_STRIPE_WEBHOOK_SECRET": canary.STRIPE_WEBHOOK_SECRET,
            "VETIFY_STRIPE_API_BASE": f"http://127.0.0.1:{proxy['stripe'].port}",
            "VETIFY_STRIPE_MAX_NETWORK_RETRIES": "1",
            "VETIFY_STRIPE_TIMEOUT_SECONDS": str(STRIPE_TIMEOUT),
            **{f"VETIFY_STRIPE_PRICE_{plan.value.upper()}": p for plan, p in PRICES.items()},
            "VETIFY_SMTP_HOST": "127.0.0.1",
            "VETIFY_SMTP_PORT": str(proxy["smtp"].port),
            "VETIFY_SMTP_STARTTLS": "false",
            "VETIFY_SMTP_USERNAME": SMTP_USERNAME,
            "VETIFY_SMTP_PASSWORD": canary.SMTP_PASSWORD,
            "VETIFY_SMTP_TIMEOUT_SECONDS": str(SMTP_TIMEOUT),
            "VETIFY_STORAGE_BACKEND": "s3",
            "VETIFY_S3_BUCKET": bucket,
            "VETIFY_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy['s3'].port}",
            "VETIFY_S3_REGION": S3_REGION,
            "VETIFY_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "VETIFY_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "VETIFY_S3_TIMEOUT_SECONDS": str(S3_TIMEOUT),
            "VETIFY_CLAMD_ADDRESS": f"127.0.0.1:{proxy['clamd'].port}",
            "VETIFY_CLAMD_TIMEOUT_SECONDS": str(CLAMD_TIMEOUT),
            # What an operator watches (tests/chaos/test_observed.py); Stripe asked each second.
            "VETIFY_OPERATOR_TOKEN": canary.OPERATOR_TOKEN,
            "VETIFY_METRICS_TOKEN": canary.METRICS_TOKEN,
            "VETIFY_STRIPE_PROBE_CACHE_SECONDS": "1",
        }
        with serving(postgres_server, redis_server, **settings) as live:
            yield Wired(live, proxy, stripe_api, smtp_server, clamd, bucket)


CHEAP_HASHES = {
    "VETIFY_PASSWORD_HASH_TIME_COST": "1",
    "VETIFY_PASSWORD_HASH_MEMORY_KIB": str(8 * 1024),
    "VETIFY_PASSWORD_HASH_PARALLELISM": "1",
}
"""For servers whose scenarios sign clinics up and log in as a side line: the least argon2id
the settings allow (the overload scenario, which is about hashing, keeps the default)."""
STRIPE_TIMEOUT = 2.0
SMTP_TIMEOUT = 3.0
CLAMD_TIMEOUT = 2.0
S3_TIMEOUT = 2.0
"""The wired server's timeouts for its optional dependencies, in seconds."""


@pytest.fixture
async def wired(wired_server: Wired) -> AsyncIterator[Wired]:
    """The wired server, ready, with no fault; whatever the scenario did to its proxies is put
    right afterwards, and it must be ready again (the same process)."""
    assert wired_server.live.serve is not None
    pid = wired_server.live.serve.pid
    await wait_until_ready(wired_server.url)
    yield wired_server
    wired_server.heal()
    assert wired_server.live.running, "the wired server died during the scenario"
    assert wired_server.live.serve.pid == pid, "the wired server was restarted"
    await wait_until_ready(wired_server.url)


@dataclass
class Clinic:
    """A clinic signed up on a live server for one scenario: its owner's address and a client
    carrying the owner's API token."""

    email: str
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def new_clinic(
    url: str, superuser_url: str, *, verified: bool = True
) -> AsyncIterator[Clinic]:
    """Sign up a clinic as a newcomer does; ``verified``: its owner's address as if the link
    mailed had been opened (checkout needs it). Every scenario has its own, so none depends on
    another's leftovers (a Stripe customer, a lock-out)."""
    body = signup_body()
    email = str(body["email"])
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as http:
        signed = signup_sync(http, body)
        assert signed.status_code == 201, signed.text
        if verified:
            await sql(
                superuser_url, "UPDATE users SET email_verified_at = now() WHERE email = $1", email
            )
        logged_in = login_sync(http, email, SIGNUP_PASSWORD)
        assert logged_in.status_code == 200, logged_in.text
        created = token_by_session_sync(http, logged_in, url, "chaos")
        assert created.status_code == 201, created.text
    token = created.json()["token"]
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT
    ) as client:
        yield Clinic(email, client)


@pytest.fixture
async def clinic(wired: Wired) -> AsyncIterator[Clinic]:
    """A clinic of its own on the wired server, for one scenario."""
    async with new_clinic(wired.url, wired.live.database.superuser_url) as made:
        yield made


async def sql(url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    """``statement`` on the database at ``url`` (a SQLAlchemy URL), not through any proxy."""
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        return await connection.fetch(statement, *args)
    finally:
        await connection.close()


async def wait_for(
    what: str, check: Callable[[], Awaitable[T]], within: float, every: float = 0.2
) -> tuple[T, float]:
    """Until ``check()`` returns something truthy: it, and the seconds it took; an error naming
    ``what`` and the last value past ``within``."""
    started = time.monotonic()
    while not (value := await check()):
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within}s (last: {value!r})")
        await asyncio.sleep(every)
    return value, time.monotonic() - started


async def reset_jobs(superuser_url: str, email: str) -> list[tuple[str, int]]:
    """(status, attempts) of the password-reset mail jobs for ``email``'s user."""
    rows = await sql(
        superuser_url,
        "SELECT j.status::text AS status, j.attempts FROM procrastinate_jobs j"
        " JOIN users u ON u.id::text = j.args->>'user_id'"
        " WHERE j.task_name = $1 AND u.email = $2",
        MAIL_PASSWORD_RESET,
        email,
    )
    return [(row["status"], row["attempts"]) for row in rows]


def reset_links(relay: Relay, public_url: str, email: str) -> list[str]:
    """The tokens of the password-reset links mailed to ``email`` by the server at
    ``public_url``, oldest first."""
    link = re.compile(rf"{re.escape(public_url + PASSWORD_RESET)}\?token=(\S+)")
    return [
        token for message in mails_to(relay, email) for token in link.findall(message.get_content())
    ]
