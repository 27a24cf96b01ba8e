from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.settings import Settings
from tests.harness import databases
from tests.harness.databases import Database
from tests.harness.plugin import asgi_client, stage_settings
from tests.harness.services import PostgresServer, RedisServer
from tests.harness.smtp import Relay
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import World
from tests.security.estate import Estate, furnished_pair
from tests.security.surface import census


@dataclasses.dataclass(frozen=True)
class Furnished:
    """Clinics A and B furnished once per session, in a database each test is cloned from."""

    database: Database
    pair: tuple[Estate, Estate]
    files: Path
    """The attachments' bytes (a test's storage gets a copy)."""
    customers: list[dict[str, Any]]
    """Their Stripe customers (put back into the fake Stripe for each test)."""


@pytest.fixture(scope="session")
def furnished(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
    stripe_api: FakeStripe,
    smtp_server: Relay,
) -> Iterator[Furnished]:
    database = asyncio.run(databases.clone(postgres_server, prefix="furnished"))
    files = tmp_path_factory.mktemp("furnished")
    settings = stage_settings(database, redis_server, files, stripe_api, smtp_server)

    async def furnish() -> tuple[Estate, Estate]:
        engine = create_async_engine(database.app_url)
        try:
            return await furnished_pair(World(engine, settings))
        finally:
            await engine.dispose()  # a template has no one connected

    pair = asyncio.run(furnish())
    customers = [stripe_api.customers[estate.stripe_customer].object for estate in pair]
    yield Furnished(database, pair, files, customers)
    asyncio.run(databases.drop(database))


@pytest.fixture
def template(request: pytest.FixtureRequest) -> str:
    """A test with ``estates`` starts from the furnished database (the pair costs a third of a
    second to make, and the tenancy and matrix suites ask for it in every test); the others
    from the empty one."""
    if "estates" in request.fixturenames:
        furnished: Furnished = request.getfixturevalue("furnished")
        return furnished.database.name
    return databases.TEMPLATE


@pytest.fixture
def estates(
    furnished: Furnished, settings: Settings, stripe_api: FakeStripe
) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A.
    This test's database is a copy of the furnished one: what it changes, no other test sees.
    Redis is the session's, and every such test has the same users and tokens: a test that
    locks users out or spends a quota to its end makes clinics of its own."""
    shutil.copytree(furnished.files, settings.data_dir, dirs_exist_ok=True)
    for customer in furnished.customers:
        stripe_api.put_customer(customer)
    first, second = (dataclasses.replace(estate, ids=dict(estate.ids)) for estate in furnished.pair)
    return first, second


@pytest.fixture
def census_unchanged(
    superuser_engine: AsyncEngine,
) -> Callable[[], AbstractAsyncContextManager[None]]:
    """``async with census_unchanged():`` asserts that no table gained or lost a row inside."""

    @asynccontextmanager
    async def unchanged() -> AsyncIterator[None]:
        before = await census(superuser_engine)
        yield
        assert await census(superuser_engine) == before

    return unchanged


# One database and app for a module whose every test works in clinics of its own (the
# injection, XSS and strict-schema suites): a fresh database per test would cost more than
# the attack. Row counts still compare within a test, since a module's tests run in turn.
@pytest.fixture(scope="module")
async def module_client(module_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(module_app) as http:
        yield http


@pytest.fixture(scope="module")
async def module_superuser_engine(module_database: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database.superuser_url)
    yield engine
    await engine.dispose()
