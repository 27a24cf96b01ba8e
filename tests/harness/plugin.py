"""The pytest plugin every stage loads (from the repository's conftest.py).

* Services: one PostgreSQL and one Redis per test session, from containers when a Docker
  engine answers, else local processes (:mod:`tests.harness.services`); the header says which.
* Databases: a template migrated once; ``database`` is a fresh clone per test.
* The app: ``app`` is ``create_app`` with its lifespan running, ``client`` talks to it over
  ASGI; ``live_server`` is `vetify serve` as a real process (e2e, load, chaos).
* Skips: every skipped test is listed at the end; with ``--forbid-skips`` (the pr set) a
  single skip fails the run, because a skipped test proves nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.main import create_app
from app.settings import Environment, Settings
from fixtures.demo import seed_demo
from tests.harness import browser, databases, tally
from tests.harness.databases import Database
from tests.harness.live import LiveServer
from tests.harness.proxy import FaultProxy
from tests.harness.services import (
    PostgresServer,
    Provider,
    RedisServer,
    choose_provider,
    postgres,
    redis,
)
from tests.harness.world import World

_provider_key = pytest.StashKey[Provider]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--forbid-skips", action="store_true", help="fail the run if any test is skipped"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_provider_key] = choose_provider()


def pytest_report_header(config: pytest.Config) -> str:
    return f"vetify test services: {config.stash[_provider_key]} provider"


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
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
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if session.config.getoption("--forbid-skips") and skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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


# -- a database per test, the app in process ------------------------------------------------------
@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[Database]:
    fresh = await databases.clone(postgres_server)
    yield fresh
    await databases.drop(fresh)


def _settings(database: Database, redis_server: RedisServer) -> Settings:
    return Settings(
        env=Environment.test,
        database_url=database.app_url,
        database_owner_url=database.owner_url,
        redis_url=redis_server.url,
    )


@asynccontextmanager
async def _running(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def settings(database: Database, redis_server: RedisServer) -> Settings:
    return _settings(database, redis_server)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with _running(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Talks to the app as the service's own web pages in a browser would (see ``browser``)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="https://testserver",
        event_hooks={"request": [browser.page_of(app.state.settings.public_url)]},
    ) as http:
        yield http


@pytest.fixture
async def app_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the service's role: row-level security applies."""
    engine = create_async_engine(database.app_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def superuser_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the superuser: sees every row, for checking what is really stored."""
    engine = create_async_engine(database.superuser_url)
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
    await databases.drop(fresh)


@pytest.fixture(scope="module")
def module_settings(module_database: Database, redis_server: RedisServer) -> Settings:
    return _settings(module_database, redis_server)


@pytest.fixture(scope="module")
async def module_app(module_settings: Settings) -> AsyncIterator[FastAPI]:
    async with _running(module_settings) as application:
        yield application


@pytest.fixture(scope="module")
async def module_world(
    module_database: Database, module_settings: Settings
) -> AsyncIterator[World]:
    engine = create_async_engine(module_database.app_url)
    yield World(engine, module_settings)
    await engine.dispose()


# -- the live system ------------------------------------------------------------------------------
async def _seed(database: Database) -> None:
    engine = create_async_engine(database.app_url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            await seed_demo(session)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def live_server(postgres_server: PostgresServer, redis_server: RedisServer) -> Iterator[LiveServer]:
    """`vetify serve` with the demo clinic, its database reached through a fault proxy."""
    database = asyncio.run(databases.clone(postgres_server, prefix="live"))
    asyncio.run(_seed(database))
    proxy = FaultProxy(postgres_server.host, postgres_server.port).start()
    server = LiveServer(database, proxy, redis_server.url).start()
    try:
        yield server
    finally:
        server.stop()
        proxy.stop()
        asyncio.run(databases.drop(database))
