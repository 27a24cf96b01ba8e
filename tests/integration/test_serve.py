"""`vetify serve`'s loop (app/kit/server.py, ``run``), in this process on a real socket: the app's
lifespan around uvicorn, requests answered on the socket bound first (its client the peer, not a
forwarded-for header: the app decides which proxies it trusts), and a SIGTERM that stops the
server and starts the process's deadline. The deadline's exit is replaced (it would end this
test run); tests/chaos/test_lifecycle.py runs the real process."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from app.kit import server
from app.kit.lifecycle import SIGNALS, Shutdown
from app.settings import Settings

SETTINGS = Settings(_env_file=None, shutdown_timeout_seconds=5)


@pytest.fixture
def heard() -> Iterator[list[int]]:
    """The signals that reach the process's own handlers (uvicorn raises the one it took again
    once it has stopped); this test run's handlers are put back after."""
    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    signals: list[int] = []
    for signum in SIGNALS:
        signal.signal(signum, lambda signum, frame: signals.append(signum))
    try:
        yield signals
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """The server freezes this process's heap (it would its own): given back after."""
    try:
        yield
    finally:
        gc.unfreeze()


def _app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("started")
        yield
        events.append("stopped")

    app = FastAPI(lifespan=lifespan)

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        assert request.client is not None
        return {
            "client": request.client.host,
            "running": events == ["started"],
            # What start-up built is out of the collector's reach (lifecycle.keep_for_life).
            "frozen": gc.get_freeze_count() > 0,
        }

    return app


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_serves_on_the_bound_socket_inside_the_lifespan_until_a_sigterm(
    host: str, exits: list[int], heard: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vetify")
    events: list[str] = []
    sock = server.listen(host, 0)
    port = sock.getsockname()[1]
    url = f"http://{'[::1]' if ':' in host else host}:{port}/who"
    answers: list[httpx.Response] = []

    def client() -> None:
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not answers:
                try:
                    answers.append(httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"}))
                except httpx.TransportError:
                    time.sleep(0.05)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    shutdown = Shutdown(1.0)
    asking = threading.Thread(target=client)
    asking.start()
    try:
        server.run(_app(events), SETTINGS, sock, shutdown)
    finally:
        asking.join()
        sock.close()
    assert [answer.status_code for answer in answers] == [200]
    assert answers[0].json() == {"client": host, "running": True, "frozen": True}
    assert events == ["started", "stopped"]
    assert shutdown.requested
    # Written by a thread of its own (a signal handler must not write: app/kit/lifecycle.py).
    for _ in range(100):
        if "stopping (SIGTERM), within 1.0 s" in caplog.messages:
            break
        threading.Event().wait(0.05)
    assert "stopping (SIGTERM), within 1.0 s" in caplog.messages
    assert heard == [signal.SIGTERM]


def test_a_stop_asked_for_before_serving_stops_the_server_at_once(
    exits: list[int], heard: list[int]
) -> None:
    events: list[str] = []
    shutdown = Shutdown(0.5)
    shutdown.request("SIGTERM")
    sock = server.listen("127.0.0.1", 0)
    started = time.monotonic()
    try:
        server.run(_app(events), SETTINGS, sock, shutdown)
    finally:
        sock.close()
    assert time.monotonic() - started < 5
    assert events == ["started", "stopped"]
    assert heard == []
