"""`vetify serve --workers N`: N processes serving one socket, under one supervisor.

The supervisor (the process `vetify serve` starts as) binds the socket, starts the embedded
PostgreSQL if there is one and migrates, then forks the workers: each inherits the bound socket
and the settings, and serves on its own event loop with its own pools; the kernel hands each new
connection to one of them. Forking (not spawning a fresh interpreter) shares the imported code
between the workers until one writes to it, and needs nothing pickled; what the supervisor made
is frozen out of the garbage collector's reach first, so that no worker's collection writes to
those shared pages.

What the supervisor does after that:

* A worker that exits before it serves (its lifespan refused to start: a database it cannot
  reach, a setting at fault) fails the command: the others are stopped and `vetify serve` exits
  1, as it would with one process. Restarting it would only fail again, forever.
* A worker that ends while the service runs (killed, or out of memory) is replaced at once, with
  a warning naming its exit; one that ended within :data:`RESTART_PAUSE_SECONDS` of its start
  is replaced that long after its start, so a crash loop does not take the CPU.
* The stop (SIGTERM or SIGINT to the supervisor; a terminal's Ctrl+C reaches every process of
  the group) is passed on to each worker as SIGTERM; each stops within the shared deadline
  (app/kit/lifecycle.py), and the supervisor waits for them. Past the deadline its last-resort
  step kills any worker still there, before it stops the embedded PostgreSQL.

Each worker has its own :class:`~app.kit.lifecycle.Shutdown`; only the first runs the in-process
job worker where `vetify serve` runs jobs itself (the embedded database), so there is one.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.context import ForkProcess

from app.kit.lifecycle import Shutdown, keep_for_life

log = logging.getLogger("vetify")

RESTART_PAUSE_SECONDS = 1.0
POLL_SECONDS = 0.2

Work = Callable[[int, Shutdown, Callable[[], None]], None]
"""What a worker runs: its index, its own stop, and the call that says it serves."""


class WorkerFailedToStart(RuntimeError):
    pass


@dataclass
class _Worker:
    index: int
    process: ForkProcess
    serving: ctypes.c_bool
    """Set by the worker once it serves: a shared byte without a lock, so that a worker killed
    while setting it cannot leave the supervisor waiting on a lock it held."""
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None
    """Once it has ended: when its replacement starts (at once, or
    :data:`RESTART_PAUSE_SECONDS` after it started if it ended sooner: a crash loop, paced)."""


def supervise(
    count: int, work: Work, shutdown: Shutdown, ended: Callable[[int], None] = lambda _: None
) -> None:
    """Run ``work`` in ``count`` forked processes until ``shutdown`` is asked for, then stop
    them; ``ended`` is told the pid of each that has exited (the metrics forget its gauges).
    Raises :class:`WorkerFailedToStart` if one ends before it serves."""
    context = multiprocessing.get_context("fork")
    keep_for_life()

    def start(index: int) -> _Worker:
        serving = context.RawValue(ctypes.c_bool, False)
        process = context.Process(
            target=_run, args=(index, work, shutdown.seconds, serving), name=f"worker-{index}"
        )
        process.start()
        log.info("worker %d started (pid %s)", index, process.pid)
        return _Worker(index, process, serving)

    workers = [start(index) for index in range(count)]
    shutdown.at_deadline(lambda: _kill(workers))
    try:
        while not shutdown.requested:
            running = [worker.process.sentinel for worker in workers if worker.restart_at is None]
            wait(running, timeout=POLL_SECONDS)
            for position, worker in enumerate(workers):
                if shutdown.requested:
                    break
                if worker.restart_at is None and not worker.process.is_alive():
                    _ended(worker, ended)
                if worker.restart_at is not None and time.monotonic() >= worker.restart_at:
                    workers[position] = start(worker.index)
    finally:
        _stop(workers, ended)


def _ended(worker: _Worker, ended: Callable[[int], None]) -> None:
    worker.process.join()
    if worker.process.pid is not None:
        ended(worker.process.pid)
    worker.restart_at = max(time.monotonic(), worker.started_at + RESTART_PAUSE_SECONDS)
    how = _exit(worker.process.exitcode)
    if not worker.serving.value:
        raise WorkerFailedToStart(f"worker {worker.index} exited before serving ({how})")
    log.warning(
        "worker %d (pid %s) ended (%s): starting another", worker.index, worker.process.pid, how
    )


def _run(index: int, work: Work, seconds: float, serving: ctypes.c_bool) -> None:
    def serves() -> None:
        serving.value = True

    # A stop of its own, taking the signals over from the supervisor's handlers it inherited.
    work(index, Shutdown(seconds).install(), serves)


def _stop(workers: list[_Worker], ended: Callable[[int], None]) -> None:
    for worker in workers:
        if worker.process.is_alive() and worker.process.pid is not None:
            os.kill(worker.process.pid, signal.SIGTERM)
    for worker in workers:
        worker.process.join()  # each within its own deadline; the supervisor's kills past it
        if worker.restart_at is None and worker.process.pid is not None:
            ended(worker.process.pid)


def _kill(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
