"""Password hashing off the event loop, bounded: at most one hash per core at a time.

argon2id is meant to be expensive (a core and tens of MiB for tens of milliseconds), so a log-in
flood must not become a flood of hashes: run on the event loop, each would stall every other
request; run unbounded in threads, they would fight for the cores and the memory. So hashes
take one of ``workers`` slots, at most ``queue`` callers wait for one, none longer than
``wait_seconds``; anyone beyond that is told to come back (503 with ``Retry-After``) at once,
which keeps the answers of everyone else, and the rest of the service, fast.

One pool per process (the cores are the process's); ``configure`` sets it from the settings at
start-up.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.kit import crypto
from app.kit.problems import ServiceUnavailable

T = TypeVar("T")


class Overloaded(ServiceUnavailable):
    slug, title = "overloaded", "Too busy"

    def __init__(self) -> None:
        super().__init__(
            "Too many passwords are being checked right now; try again in a moment.",
            retry_after=1,
        )


@dataclass
class Pool:
    workers: int
    queue: int
    wait_seconds: float
    checked: int = 0
    """Hashes run (computed or verified) since start: a metric, and what tests count."""
    shed: int = 0
    """Callers turned away with :class:`Overloaded`."""
    _waiting: int = 0
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def _semaphore(self) -> asyncio.Semaphore:
        # asyncio primitives belong to one event loop; a process may run several in turn.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._slots, self._loop = asyncio.Semaphore(self.workers), loop
        return self._slots

    async def run(self, work: Callable[..., T], *args: str | None) -> T:
        slots = self._semaphore()
        if slots.locked() and self._waiting >= self.queue:
            self.shed += 1
            raise Overloaded()
        self._waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.wait_seconds)
        except TimeoutError:
            self.shed += 1
            raise Overloaded() from None
        finally:
            self._waiting -= 1
        try:
            self.checked += 1
            return await asyncio.to_thread(work, *args)
        finally:
            slots.release()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


pool = Pool(workers=_cores(), queue=16 * _cores(), wait_seconds=5.0)


def configure(workers: int | None, queue: int | None, wait_seconds: float) -> Pool:
    """Replace the process's pool (``None``: one worker per core, 16 waiting per worker)."""
    global pool
    workers = workers or _cores()
    pool = Pool(
        workers=workers, queue=16 * workers if queue is None else queue, wait_seconds=wait_seconds
    )
    return pool


async def verify(password_hash: str | None, password: str) -> bool:
    """:func:`app.kit.crypto.verify_password`, in the pool."""
    return await pool.run(crypto.verify_password, password_hash, password)


async def hash(password: str) -> str:
    """:func:`app.kit.crypto.hash_password`, in the pool."""
    return await pool.run(crypto.hash_password, password)
