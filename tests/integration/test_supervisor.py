"""`vetify serve --workers N`'s supervisor (app/kit/supervisor.py), with real processes and real
signals: the supervisor runs in a process of its own (forked from this one, its signal handlers
installed as `vetify serve` installs them), its workers are forked from it, and each worker
writes what happened to it into a directory this test reads. tests/chaos/test_processes.py
serves HTTP from `vetify serve --workers 2`.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from multiprocessing.context import ForkProcess
from pathlib import Path

import psutil
import pytest

from app.kit import supervisor
from app.kit.lifecycle import Shutdown
from tests.harness.live import until

WAIT = 20.0
"""Seconds a test waits for a process to do what it must (generous: a shared machine)."""


class Journal:
    """One file per worker start, named by its index and pid; a line per event in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def note(self, index: int, event: str) -> None:
        with (self.root / f"{index}-{os.getpid()}").open("a") as file:
            file.write(event + "\n")

    def starts(self, index: int | None = None) -> list[int]:
        """The pids of the workers started (of ``index``), in no order."""
        return [
            int(path.name.split("-")[1])
            for path in self.root.iterdir()
            if index is None or path.name.startswith(f"{index}-")
        ]

    def events(self, pid: int) -> list[str]:
        (path,) = self.root.glob(f"*-{pid}")
        return path.read_text().split()


def serving_until_stopped(journal: Journal) -> supervisor.Work:
    def work(index: int, shutdown: Shutdown, serving: Callable[[], None]) -> None:
        # Said to the supervisor first: a test that sees the note may kill this worker, and one
        # killed before it said so is one that failed to start (the command fails, no restart).
        serving()
        journal.note(index, "serving")
        while not shutdown.requested:
            time.sleep(0.01)
        journal.note(index, "stopped")

    return work


def _supervise(count: int, work: supervisor.Work, seconds: float) -> None:
    """The supervisor's process: `vetify serve`'s stop, then :func:`supervisor.supervise`.
    Exit 0 when it returns, 3 when a worker failed to start."""
    shutdown = Shutdown(seconds).install()
    try:
        supervisor.supervise(count, work, shutdown)
    except supervisor.WorkerFailedToStart:
        os._exit(3)


@contextmanager
def supervising(
    count: int, work: supervisor.Work, journal: Journal, seconds: float = 10.0
) -> Iterator[ForkProcess]:
    process = multiprocessing.get_context("fork").Process(
        target=_supervise, args=(count, work, seconds)
    )
    process.start()
    try:
        yield process
    finally:
        # Nothing left behind when a test fails (a worker outliving its supervisor would hold
        # this run's output open).
        process.kill()
        process.join()
        for pid in journal.starts():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _stopped(process: ForkProcess) -> int | None:
    process.join(WAIT)
    assert not process.is_alive(), "the supervisor did not stop"
    return process.exitcode


def test_each_worker_serves_and_a_stop_reaches_every_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with supervising(3, serving_until_stopped(journal), journal) as process:
        until("three workers serving", lambda: len(journal.starts()) == 3, WAIT)
        assert {journal.starts(index)[0] for index in range(3)} == set(journal.starts())
        assert set(journal.starts()) == {
            child.pid for child in psutil.Process(process.pid).children()
        }
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        assert _stopped(process) == 0
    for pid in journal.starts():
        assert journal.events(pid) == ["serving", "stopped"]
        assert not psutil.pid_exists(pid)


def test_a_worker_starts_with_what_the_supervisor_made_out_of_the_collectors_reach(
    tmp_path: Path,
) -> None:
    """Frozen before the fork (lifecycle.keep_for_life), so that no worker's collection writes
    to the pages the workers share with the supervisor and with each other."""
    assert gc.get_freeze_count() == 0  # this test run's own heap: the supervisor's is its own
    journal = Journal(tmp_path)

    def work(index: int, shutdown: Shutdown, serving: Callable[[], None]) -> None:
        journal.note(index, f"frozen={gc.get_freeze_count() > 0}")
        serving()
        while not shutdown.requested:
            time.sleep(0.01)

    with supervising(1, work, journal) as process:
        until("the worker started", lambda: any(map(journal.events, journal.starts())), WAIT)
        assert [journal.events(pid) for pid in journal.starts()] == [["frozen=True"]]
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        assert _stopped(process) == 0


def test_a_worker_that_dies_while_serving_is_replaced(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with supervising(2, serving_until_stopped(journal), journal) as process:
        until("two workers serving", lambda: len(journal.starts()) == 2, WAIT)
        (first,) = journal.starts(0)
        (second,) = journal.starts(1)
        os.kill(first, signal.SIGKILL)
        until("worker 0 started again", lambda: len(journal.starts(0)) == 2, WAIT)
        (replacement,) = set(journal.starts(0)) - {first}
        assert journal.events(replacement) == ["serving"]
        assert journal.starts(1) == [second]  # the other one untouched
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        assert _stopped(process) == 0
    assert journal.events(first) == ["serving"]  # killed: never heard the stop
    assert journal.events(replacement) == ["serving", "stopped"]
    assert journal.events(second) == ["serving", "stopped"]


def test_a_worker_that_cannot_start_fails_the_command_and_stops_the_others(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    serves = serving_until_stopped(journal)

    def work(index: int, shutdown: Shutdown, serving: Callable[[], None]) -> None:
        if index == 1:
            until("worker 0 serving first", lambda: len(journal.starts(0)) == 1, WAIT)
            journal.note(index, "refused")
            raise SystemExit("a setting at fault")
        serves(index, shutdown, serving)

    with supervising(2, work, journal) as process:
        assert _stopped(process) == 3
    (first,) = journal.starts(0)
    (second,) = journal.starts(1)
    assert journal.events(first) == ["serving", "stopped"]
    assert journal.events(second) == ["refused"]  # not started again


def test_past_the_deadline_a_worker_still_running_is_killed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    def deaf(index: int, shutdown: Shutdown, serving: Callable[[], None]) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker stuck past its own deadline
        journal.note(index, "serving")
        serving()
        while True:
            time.sleep(0.01)

    with supervising(1, deaf, journal, seconds=1.0) as process:
        until("the worker serving", lambda: len(journal.starts()) == 1, WAIT)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        assert _stopped(process) == 1  # the deadline's exit
    (pid,) = journal.starts()
    until("the deaf worker killed", lambda: not psutil.pid_exists(pid), WAIT)


@pytest.mark.parametrize("count", [2, 4])
def test_a_crash_loop_is_paced(tmp_path: Path, count: int) -> None:
    journal = Journal(tmp_path)

    def crashing(index: int, shutdown: Shutdown, serving: Callable[[], None]) -> None:
        # When the kernel made this process (the fork): the supervisor's pacing, measured
        # without the lag of the child's own start, which a loaded machine stretches.
        journal.note(index, f"serving@{psutil.Process().create_time()}")
        serving()
        os._exit(9)

    def started(index: int) -> list[float]:
        return sorted(
            float(event.partition("@")[2])
            for pid in journal.starts(index)
            for event in journal.events(pid)
            if event.startswith("serving@")
        )

    with supervising(count, crashing, journal) as process:
        # Started again and again (however slow this machine is today)...
        until("three starts of each", lambda: all(len(started(i)) >= 3 for i in range(count)), WAIT)
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        assert _stopped(process) == 0
    # ... but each index at most once a second after its previous start (the supervisor reads
    # the clock a moment before it forks: a quarter of a second allowed for that, and for the
    # kernel's clock ticks).
    for index in range(count):
        times = started(index)
        gaps = [later - earlier for earlier, later in pairwise(times)]
        assert min(gaps) >= supervisor.RESTART_PAUSE_SECONDS - 0.25, (index, gaps)
