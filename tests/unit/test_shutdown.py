"""The process's stop (app/kit/lifecycle.py), in this process: a signal asks for it once, the
event loop hears it, and at the deadline the last-resort steps run, newest first, whatever
one of them raises, before the process exits with 1. The exit itself is the one thing
replaced (it would end this test run); tests/chaos/test_lifecycle.py stops real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from app.kit.lifecycle import SIGNALS, Shutdown


@pytest.fixture
def own_signals() -> Iterator[None]:
    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _wait_for(codes: list[int]) -> None:
    for _ in range(200):
        if codes:
            return
        threading.Event().wait(0.05)


def test_a_stop_is_asked_for_once_and_met_at_the_deadline(
    exits: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vetify")
    ran: list[str] = []
    shutdown = Shutdown(0.2)
    shutdown.at_deadline(lambda: ran.append("first"))
    shutdown.at_deadline(lambda: 1 / 0)  # a failing step does not stop the others
    shutdown.at_deadline(lambda: ran.append("last"))
    assert not shutdown.requested
    shutdown.request("SIGTERM")
    shutdown.request("SIGINT")
    assert shutdown.requested
    assert shutdown.seconds == 0.2
    threading.Event().wait(0.1)
    assert (exits, ran) == ([], [])  # not before the deadline
    _wait_for(exits)
    assert exits == [1]
    assert ran == ["last", "first"]
    stops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping")]
    assert stops == ["stopping (SIGTERM), within 0.2 s"]


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_asks_for_the_stop_instead_of_ending_the_process(
    signum: signal.Signals, exits: list[int], own_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vetify")
    shutdown = Shutdown(0.1).install()
    os.kill(os.getpid(), signum)
    assert shutdown.requested
    _wait_for(exits)
    assert exits == [1]
    assert f"stopping ({signum.name}), within 0.1 s" in caplog.messages


def test_a_signal_in_the_middle_of_writing_a_log_line_loses_no_line_and_logs_no_error(
    exits: list[int], own_signals: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The main thread writes a line to a pipe that is full, so its write waits; the signal
    interrupts that write, and its handler runs inside it. The stop's own line, written there
    too, failed as a write re-entered ("--- Logging error ---" and a traceback on stderr, seen
    in CI when the supervisor stopped a worker that was logging). Both lines arrive, whole."""
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(writer, b"." * 65_536)
    os.set_blocking(writer, True)
    stream = open(writer, "w", encoding="utf-8")  # noqa: SIM115  # closed below
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("vetify")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    received = bytearray()
    main = threading.get_ident()

    def interrupt_then_drain() -> None:
        threading.Event().wait(0.2)  # the main thread is in its write by then
        signal.pthread_kill(main, signal.SIGTERM)
        while chunk := os.read(reader, 1 << 20):
            received.extend(chunk)

    draining = threading.Thread(target=interrupt_then_drain)
    draining.start()
    try:
        shutdown = Shutdown(0.5).install()
        logger.info("line %s", "x" * 200_000)
        _wait_for(exits)
    finally:
        logger.removeHandler(handler)
        logger.level = level
        stream.close()
        draining.join(10)
        os.close(reader)
    lines = received.decode().lstrip(".").splitlines()
    assert shutdown.requested
    assert lines == [
        "line " + "x" * 200_000,
        "stopping (SIGTERM), within 0.5 s",
        "not stopped within VETIFY_SHUTDOWN_TIMEOUT_SECONDS (0.5 s): exiting now",
    ]
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.parametrize("signum", SIGNALS)
async def test_the_event_loop_hears_the_signal(
    signum: signal.Signals, exits: list[int], own_signals: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vetify")
    loop = asyncio.get_running_loop()
    shutdown = Shutdown(0.1)
    loop.call_later(0.05, os.kill, os.getpid(), signum)
    try:
        await asyncio.wait_for(shutdown.wait(), 5)
    finally:
        for each in SIGNALS:
            loop.remove_signal_handler(each)
    assert shutdown.requested
    assert f"stopping ({signum.name}), within 0.1 s" in caplog.messages  # what the operator reads
    await asyncio.to_thread(_wait_for, exits)


async def test_a_stop_asked_for_before_the_loop_listened_is_not_lost(
    exits: list[int], own_signals: None
) -> None:
    shutdown = Shutdown(0.1)
    shutdown.request("SIGTERM")
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(shutdown.wait(), 5)
    finally:
        for each in SIGNALS:
            loop.remove_signal_handler(each)
    await asyncio.to_thread(_wait_for, exits)


def test_the_deadline_never_keeps_a_process_that_stopped_in_time_alive() -> None:
    """The interpreter waits at exit for every thread that is not a daemon: a deadline that is
    not one would hold a process that stopped cleanly until it passed, then exit it with 1."""
    shutdown = Shutdown(30)
    before = set(threading.enumerate())
    shutdown.request("SIGTERM")
    [deadline] = [thread for thread in threading.enumerate() if thread not in before]
    assert isinstance(deadline, threading.Timer)
    deadline.cancel()
    assert deadline.daemon
