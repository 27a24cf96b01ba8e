"""Request bodies an attacker sends to exhaust the service: too large (declared, or chunked
without a length), JSON nested deep enough to exhaust a recursive parser, and bodies that stop
arriving. Every route that takes a body (from the document) answers 413/400 as problem+json
and changes nothing; a stalled body is a 408.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from app.kit.bodies import json_depth_exceeds
from tests.harness.api import LOGIN_PATH, assert_problem
from tests.harness.plugin import asgi_client
from tests.security.surface import api_operations

LIMIT = 4096
WITH_BODY = [
    op
    for op in api_operations()
    if op.has_body and "application/json" in op.spec["requestBody"]["content"]
]
"""JSON bodies; the upload route's own, larger limit is attacked in test_uploads.py."""


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
async def http(configured_app):
    async with (
        configured_app(max_body_bytes=LIMIT, max_json_depth=16) as app,
        asgi_client(app) as client,
    ):
        yield client


@pytest.mark.parametrize("operation", WITH_BODY, ids=lambda op: op.label)
async def test_oversized_and_deep_bodies_are_refused_on_every_route(
    operation, http, world, census_unchanged
):
    clinic = await world.clinic()
    headers = {**clinic.owner.headers, "Content-Type": "application/json"}
    big = b'{"name": "' + b"x" * LIMIT + b'"}'
    async with census_unchanged():
        declared = await http.request(
            operation.method, operation.url(), content=big, headers=headers
        )

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 1024

        chunked = await http.request(
            operation.method, operation.url(), content=chunks(), headers=headers
        )
        deep = await http.request(
            operation.method, operation.url(), content=nested(17), headers=headers
        )
    assert_problem(declared, 413, "payload-too-large")
    assert_problem(chunked, 413, "payload-too-large")
    assert_problem(deep, 400, "bad-request")
    assert "16 deep" in deep.json()["detail"]


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(http):
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1024

    response = await http.post(
        LOGIN_PATH,
        content=endless(),
        headers={"Content-Length": str(10 * 1024**3), "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload-too-large")
    assert pulled <= 1


async def test_a_body_at_the_limits_passes_them(http):
    """The limits are where they say: a body of the limit's size nested to the limit's depth
    reaches validation (422), it is not refused as too large or too deep."""
    body = nested(16)
    body = body + b" " * (LIMIT - len(body))
    response = await http.post(
        LOGIN_PATH, content=body, headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
async def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection(
    configured_app, content_type
):
    """Read by the middleware (JSON) or by the route through it (anything else); over a real
    socket in tests/integration/test_server_limits.py (issue 15, defect 12)."""

    async def stalled() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(60)

    async with (
        configured_app(body_read_timeout_seconds=0.5) as app,
        asgi_client(app) as client,
    ):
        started = time.monotonic()
        response = await client.post(
            LOGIN_PATH, content=stalled(), headers={"Content-Type": content_type}
        )
    assert_problem(response, 408, "request-timeout")
    assert response.headers["connection"] == "close"
    assert time.monotonic() - started < 0.5 + 5


def test_depth_is_counted_outside_strings():
    assert not json_depth_exceeds(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": [1]}', 3)
    assert not json_depth_exceeds(b'["\\"[[[[[[[[[["]', 1)
    assert json_depth_exceeds(b'{"a": {"b": [[]]}}', 3)
    assert json_depth_exceeds(nested(1024 * 1024 // 2), 32)
