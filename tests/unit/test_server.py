"""How `vetify serve` runs uvicorn (app/kit/server.py), at its protocol: a head the app's limits
allow reaches the app; one over the parser's bound, or not HTTP at all, is refused as
problem+json and the connection closed; a request still running when the graceful shutdown
ends is told to retry. tests/integration/test_server_limits.py and
tests/chaos/test_lifecycle.py run the real process over a socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from app.kit import server
from app.settings import Settings
from tests.harness.api import PROBLEM_JSON, problem_type

SETTINGS = Settings(_env_file=None, max_url_bytes=2048, max_header_bytes=4096)


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _connection() -> tuple[server.BoundedH11Protocol, Transport, ServerState]:
    config = uvicorn.Config(_ok, log_level="critical", **server.options(SETTINGS))
    state = ServerState()
    protocol = server.BoundedH11Protocol(
        config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport, state


def _head(url_bytes: int, header_bytes: int) -> bytes:
    """A finished GET head whose URL and headers are as long as the app counts them."""
    headers = b"Host: x\r\n"
    padding = header_bytes - (len(b"Host") + len(b"x") + 4) - (len(b"X-Pad") + 4)
    headers += b"X-Pad: " + b"a" * padding + b"\r\n"
    return b"GET /" + b"a" * (url_bytes - 1) + b" HTTP/1.1\r\n" + headers + b"\r\n"


def _problem(written: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = written.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_the_parser_bound_is_above_the_apps_own() -> None:
    options = server.options(SETTINGS)
    assert options["http"] is server.BoundedH11Protocol
    assert options["h11_max_incomplete_event_size"] > SETTINGS.max_url_bytes + (
        SETTINGS.max_header_bytes
    )


async def test_a_head_at_the_apps_limits_reaches_the_app() -> None:
    protocol, transport, state = _connection()
    head = _head(SETTINGS.max_url_bytes, SETTINGS.max_header_bytes)
    for start in range(0, len(head), 1000):  # in pieces: the unfinished head is held meanwhile
        protocol.data_received(head[start : start + 1000])
    await asyncio.gather(*state.tasks)

    assert transport.written.startswith(b"HTTP/1.1 200 "), transport.written[:200]


@pytest.mark.parametrize(
    ("data", "status", "slug"),
    [
        pytest.param(
            _head(SETTINGS.max_url_bytes, SETTINGS.max_header_bytes)[:-2] + b"X: a\r\n" * 300,
            431,
            "headers-too-large",
            id="head-over-the-bound",
        ),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", 400, "bad-request", id="not-http"),
    ],
)
async def test_what_the_parser_refuses_is_a_problem_and_the_connection_closed(
    data: bytes, status: int, slug: str
) -> None:
    protocol, transport, state = _connection()

    protocol.data_received(data)

    answered, headers, body = _problem(transport.written)
    assert (answered, body["type"], body["status"]) == (status, problem_type(slug), status)
    assert headers["content-type"] == PROBLEM_JSON
    assert headers["connection"] == "close"
    assert transport.closed
    assert not state.tasks, "the app was called"


async def _run_until_cancelled(app: Any) -> list[dict[str, Any]]:
    """What ``server.cut_short_is_503(app)`` sends, when uvicorn cancels it as its graceful
    shutdown ends (the request still running)."""
    sent: list[dict[str, Any]] = []

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/api/v1/customers", "headers": []}
    task = asyncio.create_task(server.cut_short_is_503(app)(scope, never, send))
    await asyncio.sleep(0.01)
    task.cancel()
    await task  # ends, answered: nothing waits for it to be cancelled
    return sent


async def test_a_request_cut_short_at_shutdown_is_told_to_retry() -> None:
    async def reading_a_body(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    start, body = await _run_until_cancelled(reading_a_body)

    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 503
    assert headers["content-type"] == PROBLEM_JSON
    assert headers["retry-after"].isdigit()
    assert headers["connection"] == "close"
    problem = json.loads(body["body"])
    assert problem["type"] == problem_type("service-unavailable")
    assert problem["detail"] == "The server is stopping: retry the request."


async def test_an_answer_already_begun_is_not_begun_again() -> None:
    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    sent = await _run_until_cancelled(streaming)

    assert [message["type"] for message in sent] == ["http.response.start"]
