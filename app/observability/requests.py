"""Each HTTP request's context and its one access-log line.

:class:`RequestContext` wraps the whole app, outside even Starlette's ``ServerErrorMiddleware``
(:func:`install`), so that everything a request causes runs in its :class:`Context`: the
handlers that answer 500, the middleware that answers 413 or 429 before any route, and their
log lines. It

* binds a :class:`Context` whose ``request_id`` is the client's (or proxy's) valid
  ``X-Request-ID``, or a new one, and echoes it on the response, whoever answers;
* writes one line to ``vetify.access`` when the answer ends (or the request fails): the method,
  the route's template, the path with its query values redacted (app/kit/logs.py), the status,
  the time taken and the body's size; with the context's fields (clinic, user) as every line.

The route's template is known once the router has matched: :func:`bind_route`, a dependency of
every route, puts it in the context for the lines logged while the route runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit import context
from app.kit.logs import redact_query

access_log = logging.getLogger("vetify.access")


def install(app: FastAPI) -> None:
    """Wrap ``app``'s middleware stack, the error handling included, in :class:`RequestContext`.
    (Starlette's ``add_middleware`` places middleware inside its ``ServerErrorMiddleware``,
    which answers a 500 after the context of any middleware it wraps has ended.)"""
    build: Callable[[], ASGIApp] = app.build_middleware_stack

    def build_within_context() -> ASGIApp:
        return RequestContext(build())

    app.build_middleware_stack = build_within_context  # type: ignore[method-assign]


async def bind_route(request: Request) -> None:
    """The matched route's template into the request's context."""
    context.update(route=_template(request.scope))


def _template(scope: Scope) -> str | None:
    route = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        bound = context.Context(request_id=context.request_id_from(sent), method=scope["method"])
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        size = 0
        logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                bound.route = bound.route or _template(scope)
                _log_access(scope, status, size, time.perf_counter() - started)

        async def answer(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[context.REQUEST_ID_HEADER] = bound.request_id or ""
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Before the last part leaves: whoever has the answer can read its line.
                    log_once()
            await send(message)

        with context.bound(bound):
            try:
                await self.app(scope, receive, answer)
            finally:
                log_once()  # no answer (the client left, or the app failed before one)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _log_access(scope: Scope, status: int, size: int, seconds: float) -> None:
    target = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        target = f"{target}?{scope['query_string'].decode('latin-1')}"
    path = redact_query(target)
    duration_ms = round(seconds * 1000, 1)
    access_log.info(
        "%s %s %d %.1fms",
        scope["method"],
        path,
        status,
        duration_ms,
        extra={"path": path, "status": status, "duration_ms": duration_ms, "bytes": size},
    )
