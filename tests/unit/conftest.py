from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import profiles

from app.kit import crypto
from fixtures.factories import TEST_HASHING


@pytest.fixture(scope="module")
def cheap_hashing() -> Iterator[None]:
    """argon2id at the test stages' cost for tests of what a hash does, not what it costs (a
    production-cost hash is ~100 ms); production's parameters, the library's, restored after.
    tests/integration/test_account_lifecycle.py holds production to its parameters."""
    crypto.configure_password_hashing(**TEST_HASHING)
    yield
    default = profiles.RFC_9106_LOW_MEMORY
    crypto.configure_password_hashing(
        time_cost=default.time_cost,
        memory_cost=default.memory_cost,
        parallelism=default.parallelism,
    )
