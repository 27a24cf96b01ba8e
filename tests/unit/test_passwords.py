"""The password-hashing pool: hashes off the event loop, a slot per worker, a bounded queue,
and load shed with a 503 rather than queued without end."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from app.kit import passwords
from app.kit.passwords import Overloaded, Pool


@pytest.mark.usefixtures("cheap_hashing")
async def test_a_hash_made_in_the_pool_verifies_in_it() -> None:
    passwords.configure(workers=1, queue=None, wait_seconds=5)
    made = await passwords.hash("correct horse battery staple")
    assert await passwords.verify(made, "correct horse battery staple")
    assert not await passwords.verify(made, "wrong horse battery staple")
    assert not await passwords.verify(None, "an unknown address costs a hash too")
    assert passwords.pool.checked == 4


async def test_beyond_the_queue_and_the_wait_callers_are_turned_away() -> None:
    pool = Pool(workers=1, queue=1, wait_seconds=0.3)
    release = threading.Event()

    def busy(_: str | None = None) -> str:
        release.wait(10)
        return "done"

    running = asyncio.create_task(pool.run(busy))
    await asyncio.sleep(0.05)  # the one slot is taken
    waiting = asyncio.create_task(pool.run(busy))
    await asyncio.sleep(0.05)  # and the one place in the queue
    with pytest.raises(Overloaded) as beyond_the_queue:
        await pool.run(busy)
    assert not waiting.done()  # turned away at once, not after a wait of its own
    with pytest.raises(Overloaded):
        await waiting  # waited its 0.3 s for a slot
    release.set()
    assert await running == "done"
    assert await pool.run(busy) == "done"  # the slot was given back

    problem = beyond_the_queue.value
    assert (problem.status, problem.slug) == (503, "overloaded")
    assert problem.headers == {"Retry-After": "1"}
    # Said at a log-in: it must read as "wait", never as a wrong password.
    assert problem.detail == (
        "Too many passwords are being checked right now; try again in a moment."
    )
    assert pool.shed == 2


async def test_every_caller_turned_away_is_counted() -> None:
    pool = Pool(workers=1, queue=0, wait_seconds=5)
    release = threading.Event()

    def busy() -> str:
        release.wait(10)
        return "done"

    running = asyncio.create_task(pool.run(busy))
    await asyncio.sleep(0.05)  # the one slot is taken, and there is no queue
    for _ in range(3):
        with pytest.raises(Overloaded):
            await pool.run(busy)
    release.set()
    assert await running == "done"
    assert (pool.shed, pool.checked) == (3, 1)


async def test_the_queue_holds_as_many_callers_as_it_says_and_no_more() -> None:
    pool = Pool(workers=1, queue=2, wait_seconds=5)
    release = threading.Event()

    def busy() -> str:
        release.wait(10)
        return "done"

    running = asyncio.create_task(pool.run(busy))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(pool.run(busy)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded):
        await pool.run(busy)  # the third in the queue: turned away at once
    release.set()
    assert [await task for task in (running, *waiting)] == ["done"] * 3
    assert (pool.shed, pool.checked) == (1, 3)


def test_a_pool_serves_one_event_loop_after_another() -> None:
    """A process may run several loops in turn (a CLI command, then another): the slots of
    the first are not the second's, even when callers had to wait for them."""
    pool = Pool(workers=1, queue=4, wait_seconds=5)

    def brief() -> str:
        threading.Event().wait(0.05)
        return "done"

    async def contended() -> list[str]:
        return list(await asyncio.gather(*(pool.run(brief) for _ in range(3))))

    assert asyncio.run(contended()) == ["done"] * 3
    assert asyncio.run(contended()) == ["done"] * 3
    assert pool.checked == 6


def test_configure_sizes_the_pool_from_the_settings_or_the_cores() -> None:
    before = passwords.pool
    try:
        sized = passwords.configure(workers=3, queue=None, wait_seconds=1.5)
        assert (sized.workers, sized.queue, sized.wait_seconds) == (3, 48, 1.5)
        assert passwords.pool is sized
        assert (passwords.configure(2, 5, 0.5).queue, passwords.configure(2, 0, 0.5).queue) == (
            5,
            0,
        )
        default = passwords.configure(None, None, 5.0)
        assert (default.workers, default.queue) == (passwords._cores(), 16 * passwords._cores())
    finally:
        passwords.pool = before


def test_the_cores_are_those_the_process_may_run_on() -> None:
    """A container's cpuset (the process's affinity) may be fewer cores than the machine's."""
    allowed = os.sched_getaffinity(0)
    one = {min(allowed)}
    os.sched_setaffinity(0, one)
    try:
        assert passwords._cores() == 1
    finally:
        os.sched_setaffinity(0, allowed)
    assert passwords._cores() == len(allowed)
