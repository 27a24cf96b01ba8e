"""The rate limiter (app/kit/ratelimit.py) on the test's Redis: quotas and scripts live in Redis,
shared by every limiter (every replica) that uses it; while Redis is away each limiter counts in
its own memory (a Redis refusing connections, or taking none, costs a request a fraction of a
second); once Redis answers again it is used again, and the return is said once. In memory
alone: tests/unit/test_rate_limits.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.kit.ratelimit import (
    REDIS_CONNECTIONS,
    REDIS_TIMEOUT_SECONDS,
    REDIS_WAIT_SECONDS,
    Decision,
    Limiter,
    Policy,
)
from tests.harness.limits import COUNT, LOGIN, READS
from tests.harness.services import RedisServer


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A Redis URL on a port nothing listens on (bound, so nothing else takes it)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{held.getsockname()[1]}/0"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A Redis URL whose port takes no more connections: its backlog is full, so a connection
    attempt waits (as to a host that drops them) until the client gives up."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port = listening.getsockname()[1]
        waiting = [socket.socket() for _ in range(3)]
        for each in waiting:
            each.setblocking(False)
            each.connect_ex(("127.0.0.1", port))
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            for each in waiting:
                each.close()


async def test_a_redis_that_takes_no_connection_costs_a_request_one_timeout_not_five_seconds(
    silent_url: str,
) -> None:
    limiter = Limiter(silent_url)
    started = time.monotonic()
    decision = await limiter.hit(READS, "k")
    assert time.monotonic() - started < REDIS_TIMEOUT_SECONDS + 1  # redis-py's default: 5 s
    assert decision.allowed
    assert limiter.degradations == 1
    await limiter.close()


async def test_while_redis_is_unreachable_memory_takes_over_and_fail_closed_gets_a_quarter(
    refused_url: str,
) -> None:
    limiter = Limiter(refused_url, retry_seconds=60)
    assert limiter.backend == "redis"
    started = time.monotonic()
    logins = [await limiter.hit(LOGIN, "someone@example.com") for _ in range(3)]
    assert time.monotonic() - started < 3
    assert limiter.degradations == 1  # then memory, without asking Redis again
    assert limiter.degraded
    assert limiter.backend == "memory (Redis unreachable)"
    assert [(d.allowed, d.limit, d.remaining) for d in logins] == [
        (True, 2, 1),
        (True, 2, 0),
        (False, 2, 0),
    ]
    reads = await limiter.hit(READS, "someone@example.com")
    assert (reads.limit, reads.remaining) == (8, 7)
    assert limiter.degradations == 1
    await limiter.close()


async def test_redis_is_tried_again_after_the_pause(refused_url: str) -> None:
    limiter = Limiter(refused_url, retry_seconds=0.2)
    await limiter.hit(READS, "k")
    assert limiter.degradations == 1
    await limiter.hit(READS, "k")
    assert limiter.degradations == 1
    await asyncio.sleep(0.25)
    assert not limiter.degraded
    await limiter.hit(READS, "k")
    assert limiter.degradations == 2
    await limiter.close()


async def test_counters_and_scripts_work_in_memory_while_redis_is_unreachable(
    refused_url: str,
) -> None:
    limiter = Limiter(refused_url)
    assert await limiter.seconds_left("blocked") == 0.0
    assert await limiter.atomic(COUNT, ["blocked"], [30_000]) == [1]
    assert await limiter.atomic(COUNT, ["blocked"], [30_000]) == [2]
    assert 25 < await limiter.seconds_left("blocked") <= 30
    await limiter.forget("blocked")
    assert await limiter.seconds_left("blocked") == 0.0
    assert limiter.degraded
    await limiter.close()


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


@pytest.mark.parametrize("at_once", [150, 400])
async def test_a_burst_beyond_the_connection_pool_waits_its_turn_and_stays_in_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, at_once: int
) -> None:
    """More requests at once than the client has connections (a log-in flood: issue 19's
    chaos run saw the limiter fall back to memory, and warn once per request): each waits for
    a connection, the quota is shared exactly, and Redis is never given up on.

    The pool's wait is a millisecond here, so the burst outruns it on any machine: a call whose
    wait ran out while Redis answers waits again. It fell back to memory, which counted from
    nothing (132 to 156 allowed of 100: on busy cores the default second ran out too). redis-py's
    own pool refused past its size at once."""
    policy = Policy.of("burst", "100/minute")
    limiter = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}", wait_seconds=0.001)
    admin = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        before = len(await admin.client_list())
        with caplog.at_level(logging.WARNING, logger="vetify.ratelimit"):
            decisions = await asyncio.gather(*(limiter.hit(policy, "k") for _ in range(at_once)))
        allowed = sum(decision.allowed for decision in decisions)
        assert (allowed, limiter.backend, limiter.degradations) == (100, "redis", 0)
        assert not caplog.records
        # The connections the burst opened stay pooled: never more than one process's share.
        assert 0 < len(await admin.client_list()) - before <= REDIS_CONNECTIONS
    finally:
        await limiter.close()
        await admin.aclose()


@pytest.mark.parametrize("callers", [1, 200])
async def test_a_frozen_redis_costs_the_calls_under_way_one_timeout(
    redis_server: RedisServer, callers: int
) -> None:
    """A Redis that stops answering on an open connection (SIGSTOP: a hung process, or a
    partition) holds a call one reply timeout, then memory takes over. Callers beyond the pool,
    waiting for a connection, wait again only for a Redis that answers: once a call on a busy
    connection has timed out, they take memory at their next look (200 callers, each waiting its
    own reply timeout in turn, would take seven seconds)."""
    assert redis_server.control is not None
    limiter = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}", retry_seconds=60)
    try:
        await limiter.hit(READS, "k")  # a connection in the pool
        redis_server.control.pause()
        try:
            started = time.monotonic()
            decisions = await asyncio.wait_for(
                asyncio.gather(*(limiter.hit(READS, f"k{n}") for n in range(callers))), 30
            )
            waited = time.monotonic() - started
        finally:
            redis_server.control.resume()
        assert all(decision.allowed for decision in decisions)
        assert (limiter.backend, limiter.degradations) == ("memory (Redis unreachable)", 1)
        assert waited + 0.05 >= REDIS_TIMEOUT_SECONDS
        # One reply timeout, then (for callers beyond the pool) one more wait for the pool; the
        # margin is for a busy machine, far below the seconds of timeouts taken in turn.
        assert waited < REDIS_TIMEOUT_SECONDS + (REDIS_WAIT_SECONDS if callers > 1 else 0) + 2
    finally:
        await limiter.close()


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


QUOTAS = [Policy.of("a", "3/minute"), Policy.of("b", "5/minute"), Policy.of("c", "2/hour")]
spend_batches = st.lists(
    st.lists(st.tuples(st.sampled_from(QUOTAS), st.sampled_from("xy")), min_size=1, max_size=3),
    min_size=1,
    max_size=10,
)


def _seen(decisions: list[Decision]) -> list[tuple[str, bool, int, int]]:
    return [(d.policy.name, d.allowed, d.limit, d.remaining) for d in decisions]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=spend_batches)
async def test_a_batch_in_one_redis_round_trip_decides_as_memory_does_one_by_one(
    batches: list[list[tuple[Policy, str]]], redis_server: RedisServer
) -> None:
    """Redis spends a batch with one script; memory one policy at a time: each refuses where the
    other does, stops at the same place, and counts what is left alike."""
    shared, alone = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}"), Limiter(None)
    try:
        for batch in batches:
            in_redis, in_memory = await shared.hit_all(batch), await alone.hit_all(batch)
            assert _seen(in_redis) == _seen(in_memory)
            assert len(in_redis) == next(
                (i + 1 for i, d in enumerate(in_redis) if not d.allowed), len(batch)
            )
            for redis_said, memory_said in zip(in_redis, in_memory, strict=True):
                assert abs(redis_said.reset_after - memory_said.reset_after) <= 1
        assert shared.backend == "redis"
    finally:
        await shared.close()
        await alone.close()


async def test_a_batch_is_one_round_trip_to_redis(redis_server: RedisServer) -> None:
    limiter = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}")
    calls = 0
    connection = limiter._redis.bridge.get_connection()  # type: ignore[union-attr]
    original = connection.execute_command

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    connection.execute_command = counted
    try:
        await limiter.hit_all([(QUOTAS[0], "x")])  # loads the script (EVALSHA, then SCRIPT LOAD)
        calls = 0
        decisions = await limiter.hit_all([(policy, "x") for policy in QUOTAS])
        assert [d.remaining for d in decisions] == [1, 4, 1]
        assert calls == 1
    finally:
        await limiter.close()
