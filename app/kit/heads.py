"""Request heads: a bound on the URL (414) and on the headers (431), both as problem+json;
a path or query parameter holding text PostgreSQL cannot store (a NUL) is a 422 on it.

The server in front (uvicorn, as `vetify serve` runs it: app/kit/server.py; a reverse proxy)
bounds what it buffers; this answers what gets through in the API's own error shape, before
any route, so nothing longer than these reaches a handler, a log line or the database.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.kit import text
from app.kit.problems import CLOSE, HeadersTooLarge, Problem, UriTooLong, problem_asgi


class RequestHeadLimits:
    def __init__(self, app: ASGIApp, *, max_url_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
        head = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        # Either leaves the body, if any, unread: the connection closes after the answer.
        if url > self.max_url_bytes:
            refusal: Problem = UriTooLong(
                f"The URL may be at most {self.max_url_bytes} bytes.", headers=CLOSE
            )
        elif head > self.max_header_bytes:
            refusal = HeadersTooLarge(
                f"The request's headers may be at most {self.max_header_bytes} bytes in all.",
                headers=CLOSE,
            )
        elif not text.storable(scope["path"]):
            refusal = text.refusal(["path"])
        elif (name := unstorable_parameter(scope["query_string"])) is not None:
            refusal = text.refusal(["query", name])
        else:
            await self.app(scope, receive, send)
            return
        await problem_asgi(refusal)(scope, receive, send)


def unstorable_parameter(query: bytes) -> str | None:
    """The first query parameter whose name or value (decoded as Starlette does) cannot be
    stored."""
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if not (text.storable(name) and text.storable(value)):
            return name if text.storable(name) else name.encode("unicode_escape").decode()
    return None
