"""The error path never fails: every branch of the exception handlers, driven with hostile
request data (long paths of any characters, odd query strings, long details), answers
problem+json with its own status, never a 500 nor text/plain (issue 15, defects 1 and 2)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, HTTPException, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp

from app.kit import problems
from app.kit.heads import RequestHeadLimits
from app.kit.problems import MEDIA_TYPE, NotFound, ProblemBody

MAX_URL_BYTES = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int


def _app() -> ASGIApp:
    app = FastAPI()
    problems.install(app)

    @app.get("/problem/{rest:path}")
    async def problem(rest: str) -> None:
        raise NotFound(f"No such thing: {rest}")  # a detail as long as the path

    @app.post("/validated/{rest:path}")
    async def validated(rest: str, body: Body) -> None:
        return None

    @app.get("/http/{rest:path}")
    async def http(rest: str, request: Request) -> None:
        raise HTTPException(status_code=418, detail=request.url.query or rest)

    @app.get("/unexpected/{rest:path}")
    async def unexpected(rest: str) -> None:
        raise RuntimeError(rest)

    return RequestHeadLimits(app, max_url_bytes=MAX_URL_BYTES, max_header_bytes=MAX_HEADER_BYTES)


APP = _app()
# Any character a client can put in a URL once percent-encoded (lone surrogates cannot be),
# short or long: Hypothesis seldom draws a long text by itself, and the limits the error path
# must survive (2,000 characters in the document, 8 KiB of URL) are only crossed by long ones.
_anything = st.characters(exclude_categories=("Cs",))
# Each class of code point a client can send, drawn on purpose: Hypothesis' own text seldom
# holds a NUL, and never in the few examples a suite can afford.
CLASSES = ["\x00", "\x1b", "\u202e", "\ufeff", "\uffff", "\U0001f600", "%", "/", "\r\n"]
hostile = st.one_of(
    st.lists(st.sampled_from(CLASSES) | st.text(_anything, max_size=3), max_size=6).map("".join),
    st.text(_anything, max_size=40),
    # Long ones built by repeating a short piece: drawn fast, and around every limit.
    # (At most 2,200 characters: percent-encoded, path and query stay within httpx's 64 KiB.)
    st.builds(operator.mul, st.text(_anything, min_size=1, max_size=2), st.integers(400, 1100)),
)


def _url(prefix: str, rest: str, query: str) -> str:
    return f"{prefix}/{quote(rest, safe='')}?{quote(query, safe='=&')}"


BRANCHES: dict[str, tuple[str, str, int]] = {
    # branch: (method, path prefix, status)
    "problem": ("GET", "/problem", 404),
    "validation": ("POST", "/validated", 422),
    "http": ("GET", "/http", 418),
    "unexpected": ("GET", "/unexpected", 500),
    "unknown route": ("GET", "/nowhere", 404),
    "wrong method": ("DELETE", "/problem", 405),
}


async def _send(method: str, url: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, url, **kwargs)


def _is_problem(response: httpx.Response, expected: Callable[[int], bool]) -> dict[str, Any]:
    assert response.headers["content-type"] == MEDIA_TYPE, response.text[:200]
    assert expected(response.status_code), (response.status_code, str(response.request.url)[:300])
    body: dict[str, Any] = response.json()
    ProblemBody.model_validate(body)  # within the document's own limits
    assert body["status"] == response.status_code
    return body


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(branch=st.sampled_from(sorted(BRANCHES)), rest=hostile, query=hostile)
async def test_every_error_branch_answers_problem_json(branch: str, rest: str, query: str) -> None:
    method, prefix, status = BRANCHES[branch]
    url = _url(prefix, rest, query)
    json = {"count": "not a number", "extra": rest} if branch == "validation" else None
    response = await _send(method, url, json=json)
    if len(url.encode()) > MAX_URL_BYTES:
        status = 414
    elif "\x00" in rest + query:
        status = 422  # text PostgreSQL cannot store, refused wherever it is
    elif "\n" in rest or "\r" in rest:
        status = 404  # no route's path parameter spans a line break
    _is_problem(response, lambda got: got == status)


async def test_an_over_long_url_is_414_problem_json() -> None:
    response = await _send("GET", "/problem/" + "a" * MAX_URL_BYTES)
    _is_problem(response, lambda got: got == 414)


async def test_over_large_headers_are_431_problem_json() -> None:
    headers = {f"x-filler-{n}": "b" * 1000 for n in range(MAX_HEADER_BYTES // 1000 + 1)}
    response = await _send("GET", "/nowhere", headers=headers)
    _is_problem(response, lambda got: got == 431)
