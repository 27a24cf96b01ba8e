from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.harness.databases import Database
from tests.harness.plugin import asgi_client
from tests.harness.world import World
from tests.security.estate import Estate, furnished_pair
from tests.security.surface import census


@pytest.fixture
async def estates(world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A."""
    return await furnished_pair(world)


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
