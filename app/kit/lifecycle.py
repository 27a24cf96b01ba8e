"""How a long-running `vetify` process (``serve``, ``worker``) stops: the first SIGTERM or SIGINT
asks, and the process is gone within ``VETIFY_SHUTDOWN_TIMEOUT_SECONDS`` whatever it is doing.

A stop asked for while the process starts (PostgreSQL, migrations) does not interrupt those
steps: the process sees it once they are done and stops instead of serving. Once it serves, the
deadline is shared out: requests in flight get :data:`REQUESTS_SHARE` of it (uvicorn's graceful
shutdown), the job worker :data:`JOBS_SHARE` (app/queue.py), and the rest closes connections.
Should a step still hang, a timer thread ends the process at the deadline (exit code 1), after
its last-resort steps (stopping the embedded PostgreSQL at once), so an orchestrator never has to
SIGKILL it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("vetify")

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REQUESTS_SHARE = 0.4
JOBS_SHARE = 0.4
STOPPING = "stopping (%s), within %s s"


def keep_for_life() -> None:
    """Take every object the process has made so far out of the garbage collector's reach
    (``gc.freeze``), once the garbage among them is collected. Called by `vetify serve` once
    it has started (the modules, the app and its routes, the pools: about 270,000 objects that
    live as long as the process, which a full collection would otherwise walk again and again
    while it serves), and by the supervisor before it forks the workers (a worker's
    collections then never write to the pages it shares with the others). Measured in ADR 0019
    ("The collector"): 12% less CPU a request; two fifths less memory of its own a worker."""
    gc.collect()
    gc.freeze()


class Shutdown:
    """The process's stop: asked for once, met within ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._asked = threading.Event()
        self._last_resort: list[Callable[[], None]] = []

    def install(self) -> Shutdown:
        """Take SIGTERM and SIGINT (from their default: terminate, KeyboardInterrupt)."""
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)
        return self

    @property
    def requested(self) -> bool:
        return self._asked.is_set()

    def request(self, why: str) -> None:
        """Ask for the stop (again: nothing more) and start the deadline's clock."""
        if self._start():
            log.info(STOPPING, why, self.seconds)

    def request_from_signal(self, why: str) -> None:
        """:meth:`request`, from a signal handler. Python runs one between two steps of the main
        thread, perhaps inside a write of a log line to the same stream (a write that blocked on
        a full pipe and was interrupted), and a stream written to again from inside its own write
        fails ("--- Logging error ---" and a traceback on stderr, seen when the supervisor
        stopped a worker that was logging). So the line is written by a thread of its own, which
        waits for the handler's lock like any other thread."""
        if self._start():
            threading.Thread(
                target=log.info, args=(STOPPING, why, self.seconds), name="vetify-stopping"
            ).start()

    def _start(self) -> bool:
        """Mark the stop asked for and start the deadline; False if it already was."""
        if self._asked.is_set():
            return False
        self._asked.set()
        deadline = threading.Timer(self.seconds, self._expire)
        deadline.daemon = True
        deadline.start()
        return True

    def at_deadline(self, step: Callable[[], None]) -> None:
        """Run ``step`` if the deadline passes, before the process exits."""
        self._last_resort.append(step)

    async def wait(self) -> None:
        """Until the stop is asked for; the running event loop takes the signals over, since
        a plain signal handler would not wake it."""
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        for signum in SIGNALS:
            loop.add_signal_handler(signum, self._on_loop_signal, signum, asked)
        if self.requested:  # before the loop took the signals
            asked.set()
        await asked.wait()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request_from_signal(signal.Signals(signum).name)

    def _on_loop_signal(self, signum: signal.Signals, asked: asyncio.Event) -> None:
        self.request(signum.name)
        asked.set()

    def _expire(self) -> None:
        log.error(
            "not stopped within VETIFY_SHUTDOWN_TIMEOUT_SECONDS (%s s): exiting now", self.seconds
        )
        for step in reversed(self._last_resort):
            with contextlib.suppress(Exception):
                step()
        os._exit(1)
