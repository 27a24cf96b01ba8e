"""`vetify serve` bounds what a client can make it hold: a header block of 160 KB, and a body
that does not arrive (issue 15, defect 12: the body that never came held its request 8 s and
more, and 160 KB of headers was taken in whole).

Against the real process over a real socket: these bounds live in how the server runs
(app/kit/server.py) and in the body middleware, which an in-process client never reaches.
Times are bounds with room for a shared, noisy machine, never tight ones.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.api import PROBLEM_JSON, problem_type
from tests.harness.live import LiveServer
from tests.harness.plugin import serving
from tests.harness.services import PostgresServer, RedisServer

BODY_SECONDS = 2
"""VETIFY_BODY_READ_TIMEOUT_SECONDS of the server under test."""
SLACK = 5.0
"""Seconds of room beyond a configured time (or for an immediate refusal)."""


@pytest.fixture(scope="module")
def server(postgres_server: PostgresServer, redis_server: RedisServer) -> Iterator[LiveServer]:
    with serving(
        postgres_server, redis_server, VETIFY_BODY_READ_TIMEOUT_SECONDS=str(BODY_SECONDS)
    ) as live:
        yield live


def _answer(sock: socket.socket, within: float, trickle: bool = False) -> tuple[bytes, bool]:
    """What the server sends within ``within`` seconds, and whether it then closed the
    connection (a reset included). ``trickle``: send a byte of body every half second."""
    deadline = time.monotonic() + within
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.5) if trickle else left)
        try:
            if trickle:
                sock.sendall(b" ")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:  # reset: the server closed with our bytes unread
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def _problem(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert headers.get("content-type") == PROBLEM_JSON, answer[:500]
    return int(status_line.split()[1]), headers, json.loads(body)


def _head(*, finished: bool) -> bytes:
    """``GET /health/live`` with 160 header lines of 1 KB, ended by the blank line or not."""
    lines = [b"GET /health/live HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [b"X-Padding-%d: %s" % (n, b"a" * 1000) for n in range(160)]
    return b"\r\n".join(lines) + b"\r\n" + (b"\r\n" if finished else b"")


@pytest.mark.parametrize("finished", [False, True], ids=["unfinished", "finished"])
def test_a_160_kb_header_block_is_refused_and_the_connection_closed(
    server: LiveServer, finished: bool
) -> None:
    """Unfinished, no app has seen the request: only the HTTP parser can refuse it, once what
    it holds passes its bound. Finished, the parser or the app (app/kit/heads.py) refuses it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=SLACK) as sock:
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):  # refused while still sending
            sock.sendall(_head(finished=finished))
        answer, closed = _answer(sock, within=SLACK)
        seconds = time.monotonic() - started

    assert closed, f"the connection was still open after {seconds:.1f} s: {answer[:200]!r}"
    # A server closing on bytes it has not read resets the connection, which may lose its
    # answer; when there is one, it is the 431 problem, and it says the server closes (not
    # the keep-alive timeout, which would close it a few seconds later).
    if answer:
        status, headers, body = _problem(answer)
        assert (status, body["type"]) == (431, problem_type("headers-too-large")), body
        assert headers.get("connection") == "close", headers


@pytest.mark.parametrize(
    ("content_type", "trickle"),
    [
        pytest.param(b"application/json", False, id="json-never-sent"),
        pytest.param(b"application/json", True, id="json-trickled"),
        pytest.param(b"multipart/form-data; boundary=x", False, id="streamed-never-sent"),
    ],
)
def test_a_body_that_does_not_arrive_in_time_is_a_408_and_the_connection_closed(
    server: LiveServer, content_type: bytes, trickle: bool
) -> None:
    """The whole body is due within the configured seconds: one that never comes, and one
    that comes a byte at a time, alike. JSON bodies are read by the middleware; others by the
    route, through it."""
    head = (
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: %s\r\nContent-Length: 1000\r\n\r\n" % content_type
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=SLACK) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer, closed = _answer(sock, within=BODY_SECONDS + SLACK, trickle=trickle)
        seconds = time.monotonic() - started

    assert answer, f"no answer within {BODY_SECONDS + SLACK} s"
    status, headers, body = _problem(answer)
    assert (status, body["type"]) == (408, problem_type("request-timeout")), body
    assert headers.get("connection") == "close"
    assert closed
    assert BODY_SECONDS * 0.9 <= seconds < BODY_SECONDS + SLACK
