from __future__ import annotations

import pytest

from app.auth.models import Role
from tests.harness.world import World
from tests.security.estate import Estate, furnish


@pytest.fixture
async def estates(world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, each with a row in every tenant table; the suites attack B from A."""
    # An owner attacks; a vet and a technician are what appointments and staff routes name.
    roles = (Role.vet, Role.technician)
    return (
        await furnish(world, await world.clinic(roles)),
        await furnish(world, await world.clinic(roles)),
    )
