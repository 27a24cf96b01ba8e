"""What the rate limiter's tests (tests/unit/test_rate_limits.py, in memory; tests/integration/
test_rate_limiter.py, on Redis) count with: two policies, one failing closed, and a script."""

from __future__ import annotations

from limits.aio.storage import MemoryStorage

from app.kit.ratelimit import Policy, Script

LOGIN = Policy.of("login", "8/minute", fail_closed=True)
READS = Policy.of("reads", "8/minute")


async def _count_in_memory(store: MemoryStorage, keys: list[str], args: list[int]) -> list[int]:
    (key,) = keys
    return [await store.incr(key, args[0] / 1000)]


COUNT = Script(
    "count",
    "local n = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return {n}",
    _count_in_memory,
)
"""A counter that expires ``args[0]`` ms after its last step."""
