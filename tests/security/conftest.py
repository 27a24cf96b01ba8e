from __future__ import annotations

import pytest

from tests.harness.world import World
from tests.security.estate import Estate, furnish


@pytest.fixture
async def estates(world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A."""
    return await furnish(world, await world.clinic()), await furnish(world, await world.clinic())
