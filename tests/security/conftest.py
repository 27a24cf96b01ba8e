from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.models import Role
from tests.harness.world import World
from tests.security.estate import Estate, furnish
from tests.security.surface import census


@pytest.fixture
async def estates(world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A."""
    # An owner attacks; a vet and a technician are what appointments and staff routes name.
    roles = (Role.vet, Role.technician)
    return (
        await furnish(world, await world.clinic(roles)),
        await furnish(world, await world.clinic(roles)),
    )


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
