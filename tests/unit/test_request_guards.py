"""The middleware that answers before any route, driven at its ASGI interface: the body limits
(app/kit/bodies.py: 413 declared or counted, 408 late, 400 too deep, 422 unstorable), the head
limits (app/kit/heads.py: 414, 431, 422) and the security headers (app/kit/headers.py).

Each refusal is problem+json naming its limit, closes the connection where the request is left
unread, and never reaches the route; what is within a limit, to the byte, does reach it.
tests/security/test_request_limits.py and test_headers.py hold the same rules on every route
of the real app; these hold each middleware alone, at its edges.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.bodies import BodyLimits, json_depth_exceeds
from app.kit.headers import API_POLICY, HSTS, NONCE_KEY, SecurityHeaders, nonce
from app.kit.heads import RequestHeadLimits
from app.kit.problems import MEDIA_TYPE, PROBLEM_BASE
from app.kit.text import MESSAGE

LIMIT = 64
DEPTH = 3
DEADLINE = 0.05


@dataclass
class Route:
    """An ASGI app that reads the whole body, then answers 200 with what it read."""

    calls: int = 0
    bodies: list[bytes] = field(default_factory=list)
    scopes: list[Scope] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Answer:
    messages: list[Message]
    pulled: int
    """How many times the app called ``receive``."""
    path: str = ""

    @property
    def status(self) -> int:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.messages
        status: int = starts[0]["status"]
        return status

    @property
    def headers(self) -> dict[str, str]:
        (start,) = [m for m in self.messages if m["type"] == "http.response.start"]
        return {k.decode().lower(): v.decode() for k, v in start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    def problem(self, status: int, slug: str) -> dict[str, Any]:
        assert self.status == status, self.messages
        assert self.headers["content-type"] == MEDIA_TYPE
        document: dict[str, Any] = json.loads(self.body)
        assert document["type"] == PROBLEM_BASE + slug
        assert document["status"] == status
        assert document["instance"] == self.path
        return document


def _scope(
    method: str = "POST",
    path: str = "/things",
    headers: Sequence[tuple[bytes, bytes]] = (),
    query: bytes = b"",
    **extra: Any,
) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": list(headers),
        **extra,
    }


def _json(length: int | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    return headers if length is None else [*headers, (b"content-length", str(length).encode())]


async def _exchange(
    app: ASGIApp, scope: Scope, chunks: Sequence[bytes] = (b"",), *, then_stall: bool = False
) -> Answer:
    """Send ``chunks`` as the body (then, if ``then_stall``, nothing more, ever)."""
    pending: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": then_stall or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        await asyncio.sleep(0)  # a server's receive waits for the network, if only a moment
        if pending:
            return pending.pop(0)
        if then_stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return Answer(sent, pulled, scope["path"])


def _limits(route: ASGIApp, *, read_timeout: float = 10.0, **options: Any) -> BodyLimits:
    """Bodies' limits; a deadline the tests of the deadline shorten (the others must not
    meet it on a busy machine)."""
    return BodyLimits(
        route, max_bytes=LIMIT, max_json_depth=DEPTH, read_timeout=read_timeout, **options
    )


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- the body's size -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [_json, lambda length: [(b"content-length", b"%d" % length)]])
async def test_a_declared_length_over_the_limit_is_refused_unread(headers: Any) -> None:
    route = Route()
    answer = await _exchange(_limits(route), _scope(headers=headers(LIMIT + 1)), [b"x"])
    body = answer.problem(413, "payload-too-large")
    assert body["detail"] == f"The request body may be at most {LIMIT} bytes."
    assert answer.headers["connection"] == "close"
    assert (route.calls, answer.pulled) == (0, 0)


@pytest.mark.parametrize("content_type", [b"application/json", b"text/plain"])
async def test_a_declared_length_of_the_limit_passes(content_type: bytes) -> None:
    route = Route()
    body = b"[" + b" " * (LIMIT - 2) + b"]"
    headers = [(b"content-type", content_type), (b"content-length", b" %d " % LIMIT)]
    answer = await _exchange(_limits(route), _scope(headers=headers), [body])
    assert answer.status == 200
    assert route.bodies == [body]


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"APPLICATION/JSON; charset=utf-8", b"application/problem+json"],
)
async def test_a_json_body_over_the_limit_is_refused_at_the_first_byte_over(
    content_type: bytes,
) -> None:
    route = Route()
    chunks = [b"[" + b" " * 30, b" " * (LIMIT - 31), b"]", b" " * 1000]
    answer = await _exchange(
        _limits(route), _scope(headers=[(b"content-type", content_type)]), chunks
    )
    body = answer.problem(413, "payload-too-large")
    assert body["detail"] == f"The request body may be at most {LIMIT} bytes."
    assert answer.headers["connection"] == "close"
    assert route.calls == 0
    assert answer.pulled == 3  # not the fourth chunk


async def test_a_json_body_of_the_limit_in_chunks_reaches_the_route_whole() -> None:
    route = Route()
    chunks = [b"[", b" " * (LIMIT - 2), b"]"]
    answer = await _exchange(_limits(route), _scope(headers=_json()), chunks)
    assert answer.status == 200
    assert route.bodies == [b"".join(chunks)]


async def test_after_the_replayed_body_the_route_hears_the_client() -> None:
    heard: list[Message] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        heard.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await _exchange(_limits(route), _scope(headers=_json()), [b"[1,", b"2]"])
    assert heard == [
        {"type": "http.request", "body": b"[1,2]", "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_a_client_gone_before_its_json_body_ends_gets_no_answer() -> None:
    route = Route()
    pending: list[Message] = [
        {"type": "http.request", "body": b"[", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return pending.pop(0)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _limits(route)(_scope(headers=_json()), receive, send)
    assert (route.calls, sent) == (0, [])


async def test_a_streamed_body_over_the_limit_is_a_413_whatever_the_route_made_of_it() -> None:
    answered: list[str] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        finally:
            # What a form parser does with a body cut short: answers 400 itself (dropped).
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"cannot parse"})
            answered.append("400")

    headers = [(b"content-type", b"multipart/form-data; boundary=x")]
    chunks = [b"x" * LIMIT, b"x", b"x" * 1000]
    answer = await _exchange(_limits(route), _scope(headers=headers), chunks)
    body = answer.problem(413, "payload-too-large")
    assert body["detail"] == f"The request body may be at most {LIMIT} bytes."
    assert answer.headers["connection"] == "close"
    assert answered == ["400"]
    assert answer.pulled == 2


async def test_a_streamed_body_of_the_limit_reaches_the_route() -> None:
    route = Route()
    chunks = [b"x" * (LIMIT - 1), b"x"]
    answer = await _exchange(_limits(route), _scope(headers=[]), chunks)
    assert answer.status == 200
    assert route.bodies == [b"x" * LIMIT]


async def test_an_answer_begun_before_the_body_passed_the_limit_is_not_begun_again() -> None:
    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.body", "body": b"never sent"})

    answer = await _exchange(_limits(route), _scope(), [b"x" * LIMIT, b"x", b""])
    assert answer.messages == [{"type": "http.response.start", "status": 200, "headers": []}]


@pytest.mark.parametrize(
    ("pattern", "path", "limit"),
    [(r"/uploads$", "/uploads", 4 * LIMIT), (r"/uploads$", "/things", LIMIT)],
)
async def test_a_path_may_have_a_larger_limit(pattern: str, path: str, limit: int) -> None:
    limits = _limits(Route(), larger=[(re.compile(pattern), 4 * LIMIT)])
    assert limits.limit_for(path) == limit
    over = await _exchange(limits, _scope(path=path), [b"x" * (limit + 1)])
    assert over.problem(413, "payload-too-large")["detail"].endswith(f"at most {limit} bytes.")
    assert (await _exchange(limits, _scope(path=path), [b"x" * limit])).status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_a_method_without_a_body_passes_untouched(method: str) -> None:
    route = Route()
    scope = _scope(method=method, headers=_json(10 * LIMIT))
    answer = await _exchange(_limits(route), scope, [b"x" * (10 * LIMIT)])
    assert answer.status == 200
    assert route.bodies == [b"x" * (10 * LIMIT)]


async def test_other_connections_pass_every_middleware_untouched() -> None:
    for middleware in (
        _limits,
        lambda app: RequestHeadLimits(app, max_url_bytes=1, max_header_bytes=1),
        SecurityHeaders,
    ):
        route = Route()
        scope: Scope = {"type": "lifespan"}
        await middleware(route)(scope, _never, _nowhere)
        assert route.scopes == [scope]
        assert scope == {"type": "lifespan"}
        # The lifespan's own messages go through as they are.
        heard = await _lifespan_through(middleware)
        assert heard == [{"type": "lifespan.startup"}, {"type": "lifespan.startup.complete"}]


async def _lifespan_through(middleware: Any) -> list[Message]:
    heard: list[Message] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        heard.append(await receive())
        await send({"type": "lifespan.startup.complete"})

    async def startup() -> Message:
        return {"type": "lifespan.startup"}

    async def sent(message: Message) -> None:
        heard.append(message)

    await middleware(lifespan)({"type": "lifespan"}, startup, sent)
    return heard


async def _never() -> Message:
    raise AssertionError("nothing to receive")


async def _nowhere(message: Message) -> None:
    raise AssertionError(f"nothing to send: {message}")


# -- the body's time -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [_json(), [(b"content-type", b"text/plain")]])
async def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection(
    headers: list[tuple[bytes, bytes]],
) -> None:
    route = Route()
    answer = await asyncio.wait_for(
        _exchange(
            _limits(route, read_timeout=DEADLINE), _scope(headers=headers), [b"["], then_stall=True
        ),
        5,
    )
    body = answer.problem(408, "request-timeout")
    assert body["detail"] == f"The request body must arrive within {DEADLINE:g} seconds."
    assert answer.headers["connection"] == "close"
    assert route.bodies == []


# -- JSON nesting and text -------------------------------------------------------------------


def test_depth_is_the_deepest_nesting_not_the_count_of_brackets() -> None:
    assert not json_depth_exceeds(nested(3), 3)
    assert json_depth_exceeds(nested(4), 3)
    assert not json_depth_exceeds(b"[[1], {}, [[]], {}]", 3)
    assert not json_depth_exceeds(b"[]" * 100, 1)
    assert json_depth_exceeds(b"{}" * 5 + b"{[{}]}", 2)
    assert not json_depth_exceeds(b"", 0)
    assert not json_depth_exceeds(b'["[[[[", "]]]]]]]]]", "{{{{"]', 1)


@pytest.mark.parametrize(
    "content_type",
    [b"application/json", b"application/json; charset=utf-8", b"application/merge-patch+json"],
)
async def test_json_deeper_than_the_limit_is_a_400_and_the_limit_passes(
    content_type: bytes,
) -> None:
    route = Route()
    headers = [(b"content-type", content_type)]
    deep = await _exchange(_limits(route), _scope(headers=headers), [nested(DEPTH + 1)])
    assert (
        deep.problem(400, "bad-request")["detail"]
        == f"JSON may nest arrays and objects {DEPTH} deep."
    )
    assert route.calls == 0
    assert (await _exchange(_limits(route), _scope(headers=headers), [nested(DEPTH)])).status == 200
    assert route.bodies == [nested(DEPTH)]


async def test_unstorable_text_in_json_is_a_422_on_its_place_but_not_on_a_verbatim_path() -> None:
    route = Route()
    body = json.dumps({"pets": [{"name": "Rex\x00"}]}).encode()
    answer = await _exchange(_limits(route, verbatim=["/signed"]), _scope(headers=_json()), [body])
    document = answer.problem(422, "validation-error")
    assert document["errors"] == [
        {"loc": ["body", "pets", 0, "name"], "msg": MESSAGE, "type": "unstorable_text"}
    ]
    assert route.calls == 0
    signed = _scope(path="/signed", headers=_json())
    assert (await _exchange(_limits(route, verbatim=["/signed"]), signed, [body])).status == 200
    assert route.bodies == [body]


async def test_a_body_that_is_not_json_is_left_to_the_route() -> None:
    route = Route()
    answer = await _exchange(_limits(route), _scope(headers=_json()), [b"{not json"])
    assert answer.status == 200
    assert route.bodies == [b"{not json"]


# -- the head --------------------------------------------------------------------------------


def _heads(route: ASGIApp, url: int = 40, head: int = 100) -> RequestHeadLimits:
    return RequestHeadLimits(route, max_url_bytes=url, max_header_bytes=head)


@pytest.mark.parametrize("raw", [True, False])
async def test_a_url_over_its_limit_is_a_414_and_of_its_limit_passes(raw: bool) -> None:
    route = Route()
    path, query = "/" + "p" * 29, b"q=" + b"v" * 8  # 30 + 10 bytes: the limit

    def scope(path: str) -> Scope:
        return _scope("GET", path, query=query, **({"raw_path": path.encode()} if raw else {}))

    assert (await _exchange(_heads(route), scope(path))).status == 200
    over = await _exchange(_heads(route), scope(path + "p"))
    assert over.problem(414, "uri-too-long")["detail"] == "The URL may be at most 40 bytes."
    assert over.headers["connection"] == "close"
    assert route.calls == 1


async def test_the_raw_path_is_what_is_counted() -> None:
    route = Route()
    # "/é" is 3 bytes as text, 7 as sent ("/%C3%A9"); the limit counts what was sent.
    scope = _scope("GET", "/é" + "p" * 34, raw_path=b"/%C3%A9" + b"p" * 34)
    assert (await _exchange(_heads(route), scope)).problem(414, "uri-too-long")


async def test_headers_over_their_limit_are_a_431_and_of_their_limit_pass() -> None:
    route = Route()
    # Each header counts its name, its value and 4 bytes (": " and the line end).
    at = [(b"host", b"x"), (b"x-pad", b"a" * (100 - 9 - 9))]
    assert (await _exchange(_heads(route), _scope("GET", "/", headers=at))).status == 200
    over = [(b"host", b"x"), (b"x-pad", b"a" * (100 - 9 - 9 + 1))]
    answer = await _exchange(_heads(route), _scope("GET", "/", headers=over))
    body = answer.problem(431, "headers-too-large")
    assert body["detail"] == "The request's headers may be at most 100 bytes in all."
    assert answer.headers["connection"] == "close"
    assert route.calls == 1


@pytest.mark.parametrize(
    ("path", "query", "loc"),
    [
        ("/pets/a\x00b", b"", ["path"]),
        ("/pets", b"q=rex&name=a%00b", ["query", "name"]),
        ("/pets", b"n%00me=x", ["query", "n\\x00me"]),
    ],
)
async def test_unstorable_text_in_the_path_or_query_is_a_422_on_it(
    path: str, query: bytes, loc: list[str]
) -> None:
    route = Route()
    answer = await _exchange(_heads(route, url=1000), _scope("GET", path, query=query))
    document = answer.problem(422, "validation-error")
    assert document["errors"] == [{"loc": loc, "msg": MESSAGE, "type": "unstorable_text"}]
    assert "connection" not in answer.headers
    assert route.calls == 0


# -- the security headers --------------------------------------------------------------------


def _answering(content_type: str | None, own: Sequence[tuple[bytes, bytes]] = ()) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*own]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        # An HTML page puts the request's nonce on its inline script.
        body = nonce(scope).encode() if content_type == "text/html" else b"{}"
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_an_html_page_may_run_only_its_own_scripts_and_those_with_its_nonce() -> None:
    first = await _exchange(SecurityHeaders(_answering("text/html")), _scope("GET"))
    second = await _exchange(SecurityHeaders(_answering("text/html")), _scope("GET"))
    policies = [answer.headers["content-security-policy"] for answer in (first, second)]
    for answer, policy in zip((first, second), policies, strict=True):
        assert f"script-src 'self' 'nonce-{answer.body.decode()}';" in policy
        assert f"style-src 'self' 'nonce-{answer.body.decode()}';" in policy
        assert "unsafe-inline" not in policy
        assert len(answer.body) == 24  # 18 random bytes: 144 bits
    assert first.body != second.body


async def test_anything_but_html_may_load_nothing_and_a_routes_own_headers_are_kept() -> None:
    own = [
        (b"content-security-policy", b"sandbox"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"cache-control", b"private, max-age=60"),
    ]
    json_answer = await _exchange(SecurityHeaders(_answering("application/json")), _scope("GET"))
    bare = await _exchange(SecurityHeaders(_answering(None)), _scope("GET"))
    kept = await _exchange(SecurityHeaders(_answering("text/html", own)), _scope("GET"))
    for answer in (json_answer, bare):
        assert answer.headers["content-security-policy"] == API_POLICY
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert kept.headers["content-security-policy"] == "sandbox"
    assert kept.headers["x-frame-options"] == "SAMEORIGIN"
    assert kept.headers["cache-control"] == "private, max-age=60"


@pytest.mark.parametrize(("scheme", "hsts"), [("https", HSTS), ("http", None)])
async def test_hsts_only_over_https(scheme: str, hsts: str | None) -> None:
    answer = await _exchange(
        SecurityHeaders(_answering("application/json")), _scope("GET", scheme=scheme)
    )
    assert answer.headers.get("strict-transport-security") == hsts


async def test_the_nonce_is_kept_in_the_requests_state_beside_what_is_there() -> None:
    scope = _scope("GET", state={"other": 1})
    await _exchange(SecurityHeaders(_answering("text/html")), scope)
    assert scope["state"]["other"] == 1
    assert scope["state"][NONCE_KEY] == nonce(scope)


@pytest.mark.parametrize("headers", [_json(), []])
async def test_a_body_message_may_leave_out_its_optional_keys(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """ASGI's ``body`` defaults to b"" and ``more_body`` to False: a server may send neither."""
    route = Route()
    pending: list[Message] = [
        {"type": "http.request", "body": b"[1", "more_body": True},
        {"type": "http.request", "more_body": True},
        {"type": "http.request", "body": b"]"},
    ]

    async def receive() -> Message:
        await asyncio.sleep(0)
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _limits(route)(_scope(headers=headers), receive, send)
    assert route.bodies == [b"[1]"]
    assert Answer(sent, 3).status == 200


async def test_a_last_body_message_without_more_body_ends_the_deadline() -> None:
    heard: list[Message] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        heard.extend([await receive(), await receive()])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    arriving: list[Message] = [{"type": "http.request", "body": b"{}"}]

    async def receive() -> Message:
        if arriving:
            return arriving.pop(0)
        await asyncio.sleep(DEADLINE * 3)  # the client leaves after the deadline
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await _limits(route, read_timeout=DEADLINE)(_scope(headers=[]), receive, send)
    assert [message["type"] for message in heard] == ["http.request", "http.disconnect"]
    assert Answer(sent, 2).status == 204
