"""Request bodies: a size limit (413) enforced while reading, a time limit (408) on the whole
body, and a nesting limit for JSON.

A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
chunked body is counted as it arrives and refused at the first byte over. Upload routes may
have a larger limit than the JSON default. The whole body is due within the read timeout of
the request reaching the app: a client that sends its head and then nothing, or a byte at a
time, holds a request (and, for an upload read after authentication, a database connection)
no longer than that. Both refusals close the connection, as the rest of the body is not read.

JSON bodies (at most the limit, so buffering them is bounded) are checked for nesting depth
before the route parses them: Python's parser recurses, and a body of 100,000 ``[`` would
otherwise cost a deep recursion per request. Then for text PostgreSQL cannot store (NUL, an
unpaired surrogate) anywhere in them: a 422 on that field, before any statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit import text
from app.kit.problems import (
    CLOSE,
    BadRequest,
    PayloadTooLarge,
    Problem,
    RequestTimeout,
    problem_asgi,
)

_WITH_BODY = {"POST", "PUT", "PATCH", "DELETE"}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests arrays/objects deeper than ``limit`` (strings are skipped)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub(b"", body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class _TooLarge(PayloadTooLarge):
    """Raised from ``receive``: a route reading the stream itself answers 413 too."""


class _TooSlow(RequestTimeout):
    """Raised from ``receive`` once the body is due: a route reading the stream answers 408."""


def _due_within(receive: Receive, seconds: float) -> Receive:
    """``receive``, raising :class:`_TooSlow` if the body is not in ``seconds`` from now."""
    deadline = asyncio.get_running_loop().time() + seconds
    complete = False

    async def timed() -> Message:
        nonlocal complete
        if complete:  # later calls wait for the client to go away, however long that takes
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            detail = f"The request body must arrive within {seconds:g} seconds."
            raise _TooSlow(detail, headers=CLOSE) from None
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return timed


class BodyLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        max_json_depth: int,
        read_timeout: float,
        larger: Sequence[tuple[re.Pattern[str], int]] = (),
        verbatim: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth
        self.read_timeout = read_timeout
        self.larger = larger
        self.verbatim = frozenset(verbatim)
        """Paths whose body is signed: the route verifies the exact bytes before reading them,
        and refuses what it cannot store itself (the text check here is skipped)."""

    def limit_for(self, path: str) -> int:
        return next((size for pattern, size in self.larger if pattern.match(path)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = {k.lower(): v for k, v in scope["headers"]}
        too_large = PayloadTooLarge(
            f"The request body may be at most {limit} bytes.", headers=CLOSE
        )
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > limit:
            await problem_asgi(too_large)(scope, receive, send)
            return
        timed = _due_within(receive, self.read_timeout)
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type == b"application/json" or content_type.endswith(b"+json"):
            await self._json(scope, timed, send, limit, too_large)
        else:
            await self._streamed(scope, timed, send, limit, too_large)

    async def _json(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: Problem
    ) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await receive()
            except _TooSlow as too_slow:
                await problem_asgi(too_slow)(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await problem_asgi(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        refusal = self._json_refusal(body, text_check=scope["path"] not in self.verbatim)
        if refusal is not None:
            await problem_asgi(refusal)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _json_refusal(self, body: bytes, *, text_check: bool) -> Problem | None:
        if json_depth_exceeds(body, self.max_json_depth):
            return BadRequest(f"JSON may nest arrays and objects {self.max_json_depth} deep.")
        if not text_check:
            return None
        try:
            value = json.loads(body)
        except ValueError:
            return None  # not JSON: the route's own validation says so
        where = text.unstorable_at(value)
        return None if where is None else text.refusal(["body", *where])

    async def _streamed(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: Problem
    ) -> None:
        size = 0
        refusal: Problem | None = None
        started = False

        async def counting() -> Message:
            nonlocal size, refusal
            try:
                message = await receive()
            except _TooSlow as too_slow:
                refusal = too_slow
                raise
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    refusal = too_large
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the route made of the interrupted body (FastAPI answers 400 for a form
            # it could not parse), the answer is the refusal.
            nonlocal started
            if refusal is not None:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge, _TooSlow):
            await self.app(scope, counting, guarded_send)
        if refusal is not None and not started:
            await problem_asgi(refusal)(scope, receive, send)
