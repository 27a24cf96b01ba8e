"""The log-in back-off and lock (app/auth/lockout.py) decide alike in Redis and in memory.

Redis runs them as Lua scripts; while Redis is away the same rule runs on this process's memory
(the guard still holds an outage). A run of attempts (each refunded or not, as an attempt that
ends before judging a password is) against both, with the same settings, must be allowed and
refused at the same attempts, number them alike, and give the same wait to the second.
"""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.lockout import REFUND, RESERVE
from app.kit.ratelimit import Limiter
from tests.harness.services import RedisServer

SECOND_MS = 1000

# (free, lock_after, lock_ms, max_backoff_ms): the arguments LoginGuard passes.
guards = st.integers(0, 3).flatmap(
    lambda free: st.tuples(
        st.just(free),
        st.integers(free + 1, free + 5),
        st.sampled_from([60_000, 900_000]),
        st.sampled_from([2_000, 4_000, 300_000]),
    )
)
# Each attempt: refunded afterwards (it ended before judging) or kept (a wrong password); and
# whether the failures' window passed before it ended (a slow attempt, the counter gone).
attempts = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=12)


def _seen(answer: list[int]) -> tuple[int, int]:
    """(allowed, the attempt's number) or (0, the whole seconds left of the block)."""
    allowed, value = answer
    return (allowed, value) if allowed else (0, -(-value // SECOND_MS))


@pytest.mark.mutation_targets(
    "app/auth/lockout.py::_wait_ms",
    "app/auth/lockout.py::_reserve_in_memory",
    "app/auth/lockout.py::_refund_in_memory",
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(guard=guards, refunded=attempts)
async def test_memory_blocks_and_refunds_as_redis_does(
    guard: tuple[int, int, int, int],
    refunded: list[tuple[bool, bool]],
    redis_server: RedisServer,
) -> None:
    free, lock_after, lock_ms, max_backoff_ms = guard
    shared, alone = Limiter(redis_server.url, key_prefix=f"test:{uuid.uuid4()}"), Limiter(None)
    keys = ["login-failures:x", "login-blocked:x"]
    try:
        for refund, window_passed in refunded:
            args = [free, lock_after, lock_ms, max_backoff_ms]
            in_redis = await shared.atomic(RESERVE, keys, args)
            in_memory = await alone.atomic(RESERVE, keys, args)
            assert _seen(in_memory) == _seen(in_redis), (in_memory, in_redis)
            for limiter in (shared, alone):
                if window_passed:
                    await limiter.forget(keys[0])
                if refund and in_redis[0]:
                    await limiter.atomic(REFUND, keys, [in_redis[1]])
        assert shared.backend == "redis"
    finally:
        await shared.close()
        await alone.close()


@pytest.mark.mutation_targets(
    "app/auth/lockout.py::_wait_ms", "app/auth/lockout.py::_reserve_in_memory"
)
async def test_in_memory_the_waits_double_to_their_cap_then_the_lock() -> None:
    """free 1, lock at 5, back-off capped at 2 s: attempt 1 is free, 2 blocks for 1 s, 3 for
    2 s, 4 for 2 s (the cap), 5 locks for the lock's length; each block refuses the next
    attempt, which is not counted, until it passes."""
    limiter = Limiter(None)
    keys = [f"login-failures:{uuid.uuid4()}", f"login-blocked:{uuid.uuid4()}"]
    args = [1, 5, 900_000, 2_000]
    seen = [_seen(await limiter.atomic(RESERVE, keys, args))]
    for _ in range(4):
        seen.append(_seen(await limiter.atomic(RESERVE, keys, args)))
        seen.append(_seen(await limiter.atomic(RESERVE, keys, args)))
        await limiter.forget(keys[1])  # the block passes, as time would
    assert seen == [(1, 1), (1, 2), (0, 1), (1, 3), (0, 2), (1, 4), (0, 2), (1, 5), (0, 900)]


@pytest.mark.mutation_targets("app/auth/lockout.py::_reserve_in_memory")
async def test_in_memory_failures_are_forgotten_after_the_locks_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failures count for the lock's length from the first (the Lua script's PEXPIRE): with
    a lock of 100 ms, attempts 150 ms later are numbered from 1 again. The memory store's
    clock (``time.time``) is held still, then moved, so no real wait decides it."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    limiter = Limiter(None)
    keys = [f"login-failures:{uuid.uuid4()}", f"login-blocked:{uuid.uuid4()}"]
    args = [5, 9, 100, 60_000]
    first = [await limiter.atomic(RESERVE, keys, args) for _ in range(3)]
    now += 0.15
    later = await limiter.atomic(RESERVE, keys, args)
    assert [first, later] == [[[1, 1], [1, 2], [1, 3]], [1, 1]]
