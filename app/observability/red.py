"""Rate, errors and duration of every request, per route template: a pure ASGI middleware,
outermost but for the proxy headers, so that what the other middleware answer (413, 414, 429)
is counted too."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.metrics import instruments

UNMATCHED = "unmatched"
"""The route of a request no route matched: one label for every such path (a scanner's
thousands of URLs must not each become a series)."""


def route_of(scope: Scope) -> str:
    """The template of the route that answered (``/api/v1/pets/{pet_id}``), which FastAPI puts
    in the scope once it has matched one."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def status_class(status: int | None) -> str:
    """``2xx``... ``5xx``; ``none`` when no answer began (the client left first)."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        made = instruments()
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        made.in_flight.inc()
        try:
            await self.app(scope, receive, watch)
        except Exception:
            # Answered 500 by Starlette's outermost handler, around this middleware.
            status = status or 500
            raise
        finally:
            made.in_flight.dec()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_of(scope)
            made.requests.labels(method, route, status_class(status)).inc()
            made.duration.labels(method, route).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods kept as labels; any other a client invents counts as ``other``."""
