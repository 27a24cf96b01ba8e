"""The pytest plugin every stage loads (from the repository's conftest.py).

* Services: one PostgreSQL and one Redis per test session, from containers when a Docker
  engine answers, else local processes (:mod:`tests.harness.services`); the header says which.
* Databases: a template migrated once; ``database`` is a fresh clone per test,
  ``empty_database`` one with no schema yet.
* The app: ``app`` is ``create_app`` with its lifespan running (the app of an earlier test
  with equal settings, started again), ``client`` talks to it over ASGI; ``live_server`` is
  `vetify serve` as a real process (e2e, load, chaos).
* Skips: every skipped test is listed at the end; with ``--forbid-skips`` (the pr set) a
  single skip fails the run, because a skipped test proves nothing.
* Leaks: the services' passwords are canaries drawn per run (:mod:`tests.harness.canary`);
  in the security stage every log record, every response through the harness clients and
  every test database's rows are searched for them, and a single finding fails the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.keys import service as keys
from app.kit.events import SecurityEvent, subscribe
from app.main import create_app
from app.observability import logs
from app.settings import Environment, Settings, StorageBackend
from fixtures.demo import seed_demo
from fixtures.factories import TEST_HASHING
from tests.harness import browser, canary, databases, tally
from tests.harness.billing import PRICES
from tests.harness.clamd import FakeClamd, fake_clamd
from tests.harness.clock import Clock, freeze
from tests.harness.databases import Database
from tests.harness.live import LiveServer
from tests.harness.proxy import FaultProxy
from tests.harness.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_server
from tests.harness.services import (
    PostgresServer,
    Provider,
    RedisServer,
    choose_provider,
    postgres,
    redis,
)
from tests.harness.smtp import USERNAME as SMTP_USERNAME
from tests.harness.smtp import Relay, smtp_relay
from tests.harness.stripe.server import FakeStripe, fake_stripe
from tests.harness.world import World

_provider_key = pytest.StashKey[Provider]()
_WORKER_FINDINGS = "vetify_findings"
ROOT = Path(__file__).resolve().parents[2]
SECURITY_STAGE = ROOT / "tests" / "security"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--forbid-skips", action="store_true", help="fail the run if any test is skipped"
    )
    parser.addoption(
        "--leak-canary",
        action="store_true",
        help="search every log record (at DEBUG) for the run's secrets; on in tests/security",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_provider_key] = choose_provider()
    # Every Settings() the tests make, and every `vetify` they start, ignores a developer's
    # .env (app/settings.py reads it only outside test and production).
    os.environ.setdefault("VETIFY_ENV", "test")
    # pytest keeps each test's captured records in its report; when the canary opens the root
    # logger to DEBUG, keep those reports at pytest's usual WARNING.
    if config.option.log_level is None:
        config.option.log_level = "WARNING"
    config.addinivalue_line(
        "markers",
        "mutation_targets(*functions): the functions (app/x.py::name, as in the mutation keys)"
        " this test is written to hold; the mutation stage runs it first, whatever the cap, on"
        " their mutants (tests/mutation/worker.py)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test id naming a canary: the canaries are drawn per process, so each xdist worker
    would collect other ids (and the run stops), and the secret would be in every report."""
    named = [item.nodeid for item in items if any(secret in item.nodeid for secret in canary.ALL)]
    if named:
        raise pytest.UsageError(
            f"test ids must not hold a canary (give the parameters ids=): {named[:5]}"
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    # Here rather than at collection: pytest's logging plugin restores the root logger's level
    # after collecting, and sets each test's level as min(this, its own).
    watched = session.config.getoption("--leak-canary") or any(
        item.path.is_relative_to(SECURITY_STAGE) for item in session.items
    )
    if watched:
        root = logging.getLogger()
        root.addHandler(canary.LeakHandler(canary.WATCH))
        root.setLevel(logging.DEBUG)
        # SQLAlchemy pins its own loggers to WARNING; open them to statements and parameters.
        # Not to DEBUG's result rows: each request's rows formatted and searched made a
        # request of the stage a quarter dearer (35 against 30 ms of CPU under coverage);
        # what rows can show is in the database, searched as it is dropped.
        logging.getLogger("sqlalchemy").setLevel(logging.INFO)
        canary.WATCH.logs_watched = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    canary.WATCH.where = item.nodeid
    root = logging.getLogger()
    level = root.level
    try:
        return (yield)
    finally:
        canary.WATCH.where = "outside tests"
        # A test that ran `vetify` in this process set up its logging: the handler (whose
        # redaction rewrites every record it handles, for the handlers after it) and the root
        # level go with the test, so no later test's records depend on which ran before.
        for handler in list(root.handlers):
            if isinstance(handler, logs.Stdout):
                root.removeHandler(handler)
        root.setLevel(level)


def pytest_report_header(config: pytest.Config) -> str:
    return f"vetify test services: {config.stash[_provider_key]} provider"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if canary.WATCH.leaks:
        terminalreporter.section(f"{len(canary.WATCH.leaks)} secret leak(s)", red=True)
        for line in dict.fromkeys(canary.WATCH.leaks):
            terminalreporter.write_line(line)
    generated = tally.lines()
    if generated:
        terminalreporter.section("generated suites")
        for line in generated:
            terminalreporter.write_line(line)
    skipped = [
        f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}"
        for report in terminalreporter.stats.get("skipped", [])
    ]
    if skipped:
        terminalreporter.section(f"{len(skipped)} skipped test(s)")
        for line in skipped:
            terminalreporter.write_line(line)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        # A pytest-xdist worker: what it found goes to the controller (its own exit status
        # does not), which reports and judges it with the other workers' (pytest_testnodedown).
        worker_output[_WORKER_FINDINGS] = {
            "leaks": canary.WATCH.leaks,
            "sizes": tally.SIZES,
            "counts": dict(tally.COUNTS),
        }
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if session.config.getoption("--forbid-skips") and skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if canary.WATCH.leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist's controller, as each worker ends: its leaks and suite sizes."""
    findings = getattr(node, "workeroutput", {}).get(_WORKER_FINDINGS)
    if findings:
        canary.WATCH.leaks.extend(findings["leaks"])
        tally.SIZES.update(findings["sizes"])
        tally.COUNTS.update(findings["counts"])


# -- the process's deadline -----------------------------------------------------------------------
@pytest.fixture
def security_events() -> Iterator[list[tuple[SecurityEvent, dict[str, Any]]]]:
    """The security events raised during the test, with their fields, as a listener hears them
    (app/kit/events.py)."""
    heard: list[tuple[SecurityEvent, dict[str, Any]]] = []
    stop = subscribe(lambda event, fields: heard.append((event, fields)))
    try:
        yield heard
    finally:
        stop()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The app's clock, frozen now; ``clock.advance(...)`` moves it."""
    return freeze(monkeypatch)


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The exit codes the deadline asked for; the test waits until it has (the timer thread
    must be done before the real exit is back)."""
    codes: list[int] = []
    done = threading.Event()

    def exit_(code: int) -> None:
        codes.append(code)
        done.set()

    monkeypatch.setattr(os, "_exit", exit_)  # what app.kit.lifecycle's deadline calls
    yield codes
    assert done.wait(10), "the deadline never came"


# -- services -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    with postgres(pytestconfig.stash[_provider_key]) as server:
        databases.prepare_template(server)
        yield server


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> Iterator[RedisServer]:
    with redis(pytestconfig.stash[_provider_key]) as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A local S3 (moto's server) for the session; each test takes a bucket of its own."""
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def stripe_api() -> Iterator[FakeStripe]:
    """The fake Stripe API (tests/harness/stripe/server.py) for the session; the app's settings
    point the SDK at it."""
    with fake_stripe() as server:
        yield server


@pytest.fixture
def stripe(stripe_api: FakeStripe) -> FakeStripe:
    """The fake Stripe API, emptied: no objects, no recorded requests, no faults."""
    stripe_api.reset()
    return stripe_api


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Relay]:
    """The mail relay every stage's settings send through (tests/harness/smtp.py)."""
    with smtp_relay(canary.SMTP_PASSWORD) as relay:
        yield relay


@pytest.fixture
def mailbox(smtp_server: Relay) -> Relay:
    """The relay, emptied: what this test's jobs sent."""
    smtp_server.reset()
    return smtp_server


@pytest.fixture
def clamd() -> Iterator[FakeClamd]:
    """A clamd that speaks INSTREAM and flags the EICAR test string."""
    with fake_clamd() as server:
        yield server


def s3_settings(settings: Settings, server: S3Server, bucket: str) -> Settings:
    """``settings`` with attachments in a bucket of the local S3."""
    return settings.model_copy(
        update={
            "storage_backend": StorageBackend.s3,
            "s3_bucket": server.new_bucket(bucket),
            "s3_endpoint_url": server.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": SecretStr(ACCESS_KEY),
            "s3_secret_access_key": SecretStr(SECRET_KEY),
        }
    )


@pytest.fixture
def database_proxy(database: Database) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test's database (``through_proxy`` points settings at it)."""
    proxy = FaultProxy(database.server.host, database.server.port).start()
    yield proxy
    proxy.stop()


def through_proxy(settings: Settings, proxy: FaultProxy, **changes: object) -> Settings:
    """``settings`` with the service's database reached through ``proxy``, and ``changes``."""
    assert settings.database_url is not None
    url = make_url(settings.database_url.get_secret_value()).set(host="127.0.0.1", port=proxy.port)
    return settings.model_copy(
        update={"database_url": SecretStr(url.render_as_string(hide_password=False)), **changes}
    )


# -- a database per test, the app in process ------------------------------------------------------
@pytest.fixture
def template() -> str:
    """The database each test's ``database`` is cloned from: migrated, empty. A suite may give
    its tests data made once per session by overriding it with a database of its own."""
    return databases.TEMPLATE


@pytest.fixture(scope="session")
async def _spares(postgres_server: PostgresServer) -> AsyncIterator[databases.Spares]:
    spares = databases.Spares(postgres_server)
    yield spares
    await spares.close()


@pytest.fixture
async def database(
    postgres_server: PostgresServer, template: str, _spares: databases.Spares
) -> AsyncIterator[Database]:
    """A fresh clone of ``template``, under the same name in every test of a process (whose
    server is its own): with ``files``, equal settings from test to test, and one app
    (``_running``). Cloned while the test before ran (``databases.Spares``)."""
    fresh = await _spares.take(template, "test_case")
    yield fresh
    await drop_searched(fresh)


async def drop_searched(database: Database) -> None:
    """Searched for the run's secrets first, where the leak watch is on."""
    if canary.WATCH.logs_watched:
        canary.WATCH.stored(await databases.tables_holding(database, canary.WATCH.canaries))
    await databases.drop(database)


@pytest.fixture
async def empty_database(postgres_server: PostgresServer) -> AsyncIterator[Database]:
    """A database with the roles of ``database`` but no schema: not migrated yet."""
    fresh = await databases.empty(postgres_server)
    yield fresh
    await drop_searched(fresh)


_SETTINGS: dict[tuple[object, ...], Settings] = {}
"""The settings this process made, by what they were made from. They are frozen, and a test's
are equal to the one's before it (one database name and files directory a process): made again
they cost each test 17 ms under coverage."""


def stage_settings(
    database: Database,
    redis_server: RedisServer,
    files: Path,
    stripe_api: FakeStripe,
    smtp: Relay,
) -> Settings:
    """The settings of the in-process stages' app: ``database``, the session's services, and
    ``files`` for attachments (and the ``VETIFY_*`` variables a test may set)."""
    made_from = (
        database.app_url,
        database.owner_url,
        database.backup_url,
        redis_server.url,
        files,
        stripe_api.base_url,
        smtp.host,
        smtp.port,
        # What Settings reads from the environment (not PYTEST_CURRENT_TEST, which changes).
        tuple(
            sorted(
                (key, value)
                for key, value in os.environ.items()
                if key.upper().startswith("VETIFY_") or key.upper() in ("DATABASE_URL", "REDIS_URL")
            )
        ),
    )
    if made_from in _SETTINGS:
        return _SETTINGS[made_from]
    made = _SETTINGS[made_from] = Settings(
        _env_file=None,  # a developer's .env configures their server, not the tests
        env=Environment.test,
        database_url=database.app_url,
        database_owner_url=database.owner_url,
        # Read by `vetify usage` alone; a secret the app holds, so the leak watch has it too.
        database_backup_url=database.backup_url,
        redis_url=redis_server.url,
        # The suites send far more than a clinic does; the limits still run, 1000x wider.
        # Tests of the limits themselves configure them (tests/security/test_rate_limits.py).
        rate_limit_scale=1000,
        # Fuzzers replay a failing example with the same address: its back-off must not make
        # the replay answer differently. The login suites set small thresholds.
        login_free_failures=10_000,
        login_lockout_failures=10_000,
        # argon2id at its cheapest (the demo users' hashes are made so too): the suites log in
        # thousands of times. Tests of what the cost buys configure production's parameters.
        password_hash_time_cost=TEST_HASHING["time_cost"],
        password_hash_memory_kib=TEST_HASHING["memory_cost"],
        password_hash_parallelism=TEST_HASHING["parallelism"],
        # Uploaded files of this database only, under pytest's temporary directory.
        data_dir=files,
        attachments_dir=files / "attachments",
        # Unused by local storage, yet secrets the app holds: the leak watch searches for them.
        s3_access_key_id=canary.S3_KEY_ID,
        s3_secret_access_key=canary.S3_SECRET,
        # Held, as the service never uses them: only `vetify backup push` and `pull` do.
        backup_s3_access_key_id=canary.BACKUP_S3_KEY_ID,
        backup_s3_secret_access_key=canary.BACKUP_S3_SECRET,
        backup_encryption_key=canary.BACKUP_KEY,
        stripe_api_key=canary.STRIPE_KEY,
        stripe_webhook_secret=canary.STRIPE_WEBHOOK_SECRET,
        stripe_api_base=stripe_api.base_url,
        # One SDK retry: the retry path runs, without a test waiting through Stripe's backoff.
        stripe_max_network_retries=1,
        stripe_timeout_seconds=2,
        **{f"stripe_price_{plan.value}": price for plan, price in PRICES.items()},
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_starttls=False,  # the loopback relay speaks plain SMTP
        smtp_username=SMTP_USERNAME,
        smtp_password=canary.SMTP_PASSWORD,
        # Held, never used to send: only `vetify` itself starts error reporting
        # (tests/integration/test_error_reports.py points it at a fake ingest).
        sentry_dsn=f"http://{canary.SENTRY_KEY}@127.0.0.1:9/1",
        operator_token=canary.OPERATOR_TOKEN,
        metrics_token=canary.METRICS_TOKEN,
        encryption_keys=canary.ENCRYPTION_KEYRING,
        # Held, as the service never is: only `vetify audit anchor` needs it (ADR 0027).
        audit_signing_key=canary.AUDIT_SIGNING_KEY,
    )
    return made


_APPS: list[FastAPI] = []
"""The apps this process made, newest first, each started again for a test with equal settings.
FastAPI builds every route's dependencies (signatures, pydantic adapters) at an app's first
request: 70 ms, 190 ms under coverage, which every test paid again. All a test can change
lives in what the lifespan makes (the engine, Redis, the limiter, storage, the workers)."""
_KEPT_APPS = 8
_STARTED: set[FastAPI] = set()


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[FastAPI]:
    application = next(
        (made for made in _APPS if made not in _STARTED and made.state.settings == settings),
        None,
    )
    if application is None:  # new settings, or the same app already running in this test
        application = create_app(settings)
        _APPS.insert(0, application)
        del _APPS[_KEPT_APPS:]
    _STARTED.add(application)
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        _STARTED.discard(application)


def forget_apps() -> None:
    """Make the next app anew: the mutation stage's worker calls it when it changes the code an
    app is made with (tests/mutation/worker.py)."""
    _APPS.clear()


@pytest.fixture(scope="session")
def _files_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture
def files(_files_root: Path) -> Path:
    """The attachments' directory: one path for every test of a process (see ``database``),
    emptied before each."""
    shutil.rmtree(_files_root)
    _files_root.mkdir()
    return _files_root


@pytest.fixture
def settings(
    database: Database,
    redis_server: RedisServer,
    files: Path,
    stripe_api: FakeStripe,
    smtp_server: Relay,
) -> Settings:
    return stage_settings(database, redis_server, files, stripe_api, smtp_server)


@pytest.fixture
def fresh_process_keys(settings: Settings) -> Iterator[None]:
    """The process's data keys and cached key versions forgotten before and after the test, as
    in a process that starts (``pytestmark = pytest.mark.usefixtures(...)``)."""
    keys.configure(keys.wrapper_from(settings))
    yield
    keys.configure(keys.wrapper_from(settings))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with _running(settings) as application:
        yield application


def asgi_client(
    app: FastAPI, *, client_ip: str = "127.0.0.1", base_url: str = "https://testserver"
) -> httpx.AsyncClient:
    """A client talking to ``app`` in process, as a peer at ``client_ip``, sending what the
    service's own web pages in a browser would (Origin, the CSRF token: see ``browser``)."""
    transport = httpx.ASGITransport(app=app, client=(client_ip, 50_000))
    return httpx.AsyncClient(
        transport=transport,
        base_url=base_url,
        event_hooks={
            "request": [browser.page_of(app.state.settings.public_url)],
            # Every answer is searched for the run's canary secrets (tests/harness/canary.py).
            **canary.WATCH.hooks(),
        },
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as http:
        yield http


def page_client(app: FastAPI) -> httpx.AsyncClient:
    """A browser on the web app's pages, JavaScript off (``browser.navigation_of``)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50_000)),
        base_url="https://testserver",
        headers=browser.NAVIGATION,
        event_hooks={
            "request": [browser.navigation_of(app.state.settings.public_url)],
            **canary.WATCH.hooks(),
        },
    )


@pytest.fixture
async def pages(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with page_client(app) as http:
        yield http


@pytest.fixture
def configured_app(
    settings: Settings,
) -> Callable[..., AbstractAsyncContextManager[FastAPI]]:
    """``async with configured_app(rate_limit_login="3/minute") as app:`` the stage's app with
    some settings changed (validated like any configuration). Tests of a protection configure
    it; they never switch it off."""

    def configured(**changes: object) -> AbstractAsyncContextManager[FastAPI]:
        return _running(Settings(**{**dict(settings), **changes}))

    return configured


@pytest.fixture
async def app_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the service's role: row-level security applies."""
    engine = databases.engine(database.app_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def cli_env(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a `vetify` command run in the test (``cli.main``) configures itself from:
    the test's database, with the backup role's URL for the commands that read every clinic."""
    monkeypatch.setenv("VETIFY_ENV", "test")
    monkeypatch.setenv("VETIFY_DATABASE_URL", database.app_url)
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", database.owner_url)
    monkeypatch.setenv("VETIFY_DATABASE_BACKUP_URL", database.backup_url)
    monkeypatch.setenv("VETIFY_ENCRYPTION_KEYS", canary.ENCRYPTION_KEYRING)


@pytest.fixture
async def superuser_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the superuser: sees every row, for checking what is really stored."""
    engine = databases.engine(database.superuser_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def world(app_engine: AsyncEngine, settings: Settings) -> World:
    return World(app_engine, settings)


# -- one database and app for a module ------------------------------------------------------------
# For suites whose every test works in a clinic of its own (tenancy keeps them apart), so that
# a test does not pay for a database and the app's start-up.
@pytest.fixture(scope="module")
async def module_database(postgres_server: PostgresServer) -> AsyncIterator[Database]:
    fresh = await databases.clone(postgres_server)
    yield fresh
    await drop_searched(fresh)


@pytest.fixture(scope="module")
def module_settings(
    module_database: Database,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    stripe_api: FakeStripe,
    smtp_server: Relay,
) -> Settings:
    files = tmp_path_factory.mktemp("files")
    return stage_settings(module_database, redis_server, files, stripe_api, smtp_server)


@pytest.fixture(scope="module")
async def module_app(module_settings: Settings) -> AsyncIterator[FastAPI]:
    async with _running(module_settings) as application:
        yield application


@pytest.fixture(scope="module")
async def module_world(
    module_database: Database, module_settings: Settings
) -> AsyncIterator[World]:
    engine = databases.engine(module_database.app_url)
    yield World(engine, module_settings)
    await engine.dispose()


# -- the live system ------------------------------------------------------------------------------
async def seed_demo_database(database: Database) -> None:
    """The demo clinic in ``database`` (as the service's role: through its tenant stamping),
    its clients' details sealed with the keys of the harness's servers."""
    keys.configure(canary.keyring())
    engine = databases.engine(database.app_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            await seed_demo(session)
    finally:
        await engine.dispose()


@contextmanager
def serving(
    postgres_server: PostgresServer, redis_server: RedisServer, **settings: str
) -> Iterator[LiveServer]:
    """`vetify serve` with the demo clinic, its database reached through a fault proxy;
    ``settings`` are more ``VETIFY_*`` variables for it."""
    database = asyncio.run(databases.clone(postgres_server, prefix="live"))
    asyncio.run(seed_demo_database(database))
    proxy = FaultProxy(postgres_server.host, postgres_server.port).start()
    server = LiveServer(database, proxy, redis_server.url, settings).start()
    try:
        yield server
    finally:
        server.stop()
        proxy.stop()
        asyncio.run(databases.drop(database))


@pytest.fixture(scope="session")
def live_server(postgres_server: PostgresServer, redis_server: RedisServer) -> Iterator[LiveServer]:
    with serving(postgres_server, redis_server) as server:
        yield server
