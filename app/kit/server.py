"""How `vetify serve` runs uvicorn: on a socket bound first, under the process's
:class:`~app.kit.lifecycle.Shutdown`, with bounds on what a client can make the server hold.

The port is bound before anything else starts (:func:`listen`), so a port in use is refused at
once. The app's lifespan is run here, around uvicorn, not by uvicorn: a start-up refusal (a
``ConfigurationError``) then reaches the command as an exception, said in one line, where
uvicorn would log a traceback; and the lifespan's shutdown (the in-process job worker, the pools)
follows uvicorn's, within the deadline.

uvicorn's default HTTP parser (httptools) buffers a request head of any size until it ends;
h11 stops once an unfinished head passes ``h11_max_incomplete_event_size``. That bound sits
just above the app's own (app/kit/heads.py: 414, 431), so every head the app would take gets
through, and the app answers those between the two. A head over it is refused here as the app
would refuse it, 431 problem+json, and the connection closed. (A head that arrives whole in a
single read is parsed whatever its size, and the app refuses it; one read is at most the event
loop's buffer, about 256 KB.)

Bodies are bounded in time by app/kit/bodies.py. A head that trickles in is not bounded here:
the reverse proxy in front times it out (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from types import FrameType
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.kit.lifecycle import REQUESTS_SHARE, Shutdown, keep_for_life
from app.kit.problems import (
    CLOSE,
    MEDIA_TYPE,
    BadRequest,
    HeadersTooLarge,
    Problem,
    ServiceUnavailable,
    problem_asgi,
)
from app.settings import Settings

log = logging.getLogger("vetify")

KEEP_ALIVE_SECONDS = 5
"""An idle connection between requests is closed after this (uvicorn's default, stated): the
proxy's own keep-alive towards the service must be shorter, or it may reuse a closing one."""
HEAD_OVERHEAD = 1024
"""Bytes of a request head outside the URL and the headers the app counts: the method, the
version, line ends, room for header folding."""


class PortUnavailable(OSError):
    pass


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound (uvicorn listens on it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def run(
    app: FastAPI,
    settings: Settings,
    sock: socket.socket,
    shutdown: Shutdown,
    serving: Callable[[], None] = lambda: None,
) -> None:
    """Serve ``app`` on ``sock`` until the stop is asked for and done; ``serving`` is called
    once the app has started (its lifespan) and what it built is kept out of the garbage
    collector's reach (:func:`~app.kit.lifecycle.keep_for_life`), just before uvicorn takes
    connections."""
    config = uvicorn.Config(
        cut_short_is_503(app),
        lifespan="off",
        log_level=settings.log_level.lower(),
        # The app believes X-Forwarded-* from its own trusted_proxies setting, not uvicorn's.
        proxy_headers=False,
        **options(settings),
    )
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve(app, config, sock, shutdown, serving))


async def _serve(
    app: FastAPI,
    config: uvicorn.Config,
    sock: socket.socket,
    shutdown: Shutdown,
    serving: Callable[[], None],
) -> None:
    async with app.router.lifespan_context(app):
        host, port = sock.getsockname()[:2]
        log.info("serving on http://%s:%d (Ctrl+C to stop)", host, port)
        keep_for_life()
        serving()
        await Server(config, shutdown).serve(sockets=[sock])


def cut_short_is_503(app: ASGIApp) -> ASGIApp:
    """uvicorn cancels the requests still running when its share of the shutdown deadline ends,
    and answers each with a 500 and logs its traceback: answer 503 problem+json instead, with
    Retry-After, so the client retries (on another replica). One whose answer had begun is cut
    off (uvicorn closes the connection)."""

    async def answered(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, sending)
        except asyncio.CancelledError:
            # The request's task ends here either way: nothing waits for it to be cancelled.
            if not started:
                problem = ServiceUnavailable("The server is stopping: retry the request.")
                problem.headers = {**(problem.headers or {}), **CLOSE}
                await problem_asgi(problem)(scope, receive, send)

    return answered


class Server(uvicorn.Server):
    """uvicorn's server under the process's :class:`Shutdown`: a signal it takes starts the
    deadline, and a stop asked for before it took the signals over is not lost."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown) -> None:
        super().__init__(config)
        self.stopping = shutdown

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            if self.stopping.requested:
                self.should_exit = True
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.request_from_signal(signal.Signals(sig).name)
        super().handle_exit(sig, frame)


def options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``."""
    requests_within = settings.shutdown_timeout_seconds * REQUESTS_SHARE
    return {
        "http": BoundedH11Protocol,
        "h11_max_incomplete_event_size": head_limit(settings),
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # The process's logging is set up by the command (app/observability/logs.py): uvicorn's
        # records go to its handler, and the app writes the access log itself, with the route,
        # the request's context and the query redacted (app/observability/requests.py).
        "log_config": None,
        "access_log": False,
        # Requests still running then are cancelled: the rest of the deadline is for the job
        # worker and the pools (app/kit/lifecycle.py).
        "timeout_graceful_shutdown": max(1, int(requests_within)),
    }


def head_limit(settings: Settings) -> int:
    return settings.max_url_bytes + settings.max_header_bytes + HEAD_OVERHEAD


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, refusing a request it cannot parse in the API's error shape."""

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this (only) while handling h11's RemoteProtocolError, which says the
        # status: 431 for a head over the bound, 400 for one that is not HTTP/1.1.
        if getattr(sys.exc_info()[1], "error_status_hint", 400) == 431:
            limit = self.config.h11_max_incomplete_event_size
            problem: Problem = HeadersTooLarge(
                f"The request line and headers may be at most {limit} bytes."
            )
        else:
            problem = BadRequest("The request is not valid HTTP/1.1.")
        body = problem.body().model_dump_json(exclude_none=True).encode()
        headers = [
            ("content-type", MEDIA_TYPE),
            ("content-length", str(len(body))),
            *CLOSE.items(),
        ]
        reason = HTTPStatus(problem.status).phrase
        response = h11.Response(status_code=problem.status, headers=headers, reason=reason)
        for event in (response, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
