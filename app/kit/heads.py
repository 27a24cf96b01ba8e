"""Request heads: a bound on the URL (414) and on the headers (431), both as problem+json.

The server in front (uvicorn, a reverse proxy) bounds what it buffers; this answers what gets
through in the API's own error shape, before any route, so nothing longer than these reaches a
handler, a log line or the database.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.kit.problems import HeadersTooLarge, Problem, UriTooLong, problem_asgi


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
        if url > self.max_url_bytes:
            refusal: Problem = UriTooLong(f"The URL may be at most {self.max_url_bytes} bytes.")
        elif head > self.max_header_bytes:
            refusal = HeadersTooLarge(
                f"The request's headers may be at most {self.max_header_bytes} bytes in all."
            )
        else:
            await self.app(scope, receive, send)
            return
        await problem_asgi(refusal)(scope, receive, send)
