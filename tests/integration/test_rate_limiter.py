"""The rate limiter (app/kit/ratelimit.py) on the test's Redis: quotas and scripts live in Redis,
shared by every limiter (every replica) that uses it; while Redis is away each limiter counts in
its own memory; once Redis answers again it is used again, and the return is said once.
In memory alone and on a Redis that never answers: tests/unit/test_rate_limits.py."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from limits.aio.storage import MemoryStorage

from app.kit.ratelimit import Limiter, Policy, Script
from tests.harness.services import RedisServer

READS = Policy.of("reads", "8/minute")
LOGIN = Policy.of("login", "8/minute", fail_closed=True)


async def _count_in_memory(store: MemoryStorage, keys: list[str], args: list[int]) -> list[int]:
    (key,) = keys
    return [await store.incr(key, args[0] / 1000)]


COUNT = Script(
    "count",
    "local n = redis.call('INCR', KEYS[1]) redis.call('PEXPIRE', KEYS[1], ARGV[1]) return {n}",
    _count_in_memory,
)


async def test_two_limiters_on_one_redis_share_quotas_counters_and_scripts(
    redis_server: RedisServer,
) -> None:
    prefix = f"test:{uuid.uuid4()}"
    one, two = (
        Limiter(redis_server.url, key_prefix=prefix),
        Limiter(redis_server.url, key_prefix=prefix),
    )
    try:
        assert [(await one.hit(READS, "k")).remaining for _ in range(3)] == [7, 6, 5]
        assert (await two.hit(READS, "k")).remaining == 4
        # Redis is not in trouble: a fail-closed policy keeps its whole quota.
        assert (await two.hit(LOGIN, "k")).limit == 8
        assert await one.atomic(COUNT, ["n"], [30_000]) == [1]
        assert await two.atomic(COUNT, ["n"], [30_000]) == [2]
        assert 25 < await two.seconds_left("n") <= 30
        assert await one.seconds_left("absent") == 0.0
        await two.forget("n")
        assert await one.seconds_left("n") == 0.0
        assert (one.backend, two.backend, one.degradations) == ("redis", "redis", 0)
    finally:
        await one.close()
        await two.close()


async def test_while_redis_is_away_memory_counts_and_redis_is_used_again_once_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vetify.ratelimit")
    assert redis_server.control is not None
    limiter = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}", retry_seconds=0.5)
    try:
        assert (await limiter.hit(READS, "k")).remaining == 7
        redis_server.control.stop()
        try:
            during = [await limiter.hit(LOGIN, "k") for _ in range(3)]
            assert [(d.allowed, d.limit) for d in during] == [(True, 2), (True, 2), (False, 2)]
            assert await limiter.atomic(COUNT, ["n"], [30_000]) == [1]  # in memory
            assert limiter.backend == "memory (Redis unreachable)"
            assert limiter.degradations == 1
        finally:
            redis_server.control.start()
        await asyncio.sleep(0.6)
        back = await limiter.hit(READS, "k")
        assert limiter.backend == "redis"
        assert not limiter.degraded
        assert (await limiter.hit(READS, "k")).remaining == back.remaining - 1
        # Counted in Redis again, where the memory's counter is not.
        assert await limiter.atomic(COUNT, ["n"], [30_000]) == [1]
        assert limiter.degradations == 1
    finally:
        await limiter.close()
    said = [r.getMessage() for r in caplog.records if r.name == "vetify.ratelimit"]
    assert said.count("Redis answers again; rate limits are back in Redis") == 1
