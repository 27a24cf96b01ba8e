"""The webhook's door: only what Stripe signed, with an active endpoint secret, lately.

Every delivery is POSTed to the route as Stripe sends it (the raw body, ``Stripe-Signature:
t=..,v1=..`` computed as Stripe computes it: tests/harness/stripe/signing.py). A refusal is a 400
problem document, and leaves nothing behind: no ``stripe_events`` row, no job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import canary
from tests.harness.api import PROBLEM_JSON
from tests.harness.billing import WEBHOOK, deliver, stored
from tests.harness.plugin import asgi_client
from tests.harness.stripe.events import event, official
from tests.harness.stripe.signing import sign, sign_many

ACTIVE = canary.STRIPE_WEBHOOK_SECRET
# pragma: allowlist nextline secret - made-up signing secrets, no endpoint has them
OTHER = "whsec_another_endpoint_0000000000000000"
# pragma: allowlist nextline secret - made-up signing secrets, no endpoint has them
OLD = "whsec_rolled_out_secret_00000000000000000"
TOLERANCE = 300  # seconds: the SDK's default, which verify() keeps


def customer_created() -> dict[str, object]:
    return event("customer.created", official("customer"))


def body_of(evt: dict[str, object]) -> bytes:
    return json.dumps(evt, indent=2).encode()


async def post(client: httpx.AsyncClient, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post(WEBHOOK, content=body, headers=headers)


async def assert_refused(response: httpx.Response, superuser_engine: AsyncEngine) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["status"] == 400
    assert await stored(superuser_engine) == (0, 0)


async def assert_accepted(
    response: httpx.Response, superuser_engine: AsyncEngine, count: int = 1
) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}
    assert await stored(superuser_engine) == (count, count)


async def test_a_valid_signature_is_stored_with_its_job_once(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine
) -> None:
    evt = customer_created()
    await assert_accepted(await deliver(client, evt), superuser_engine)
    again = await deliver(client, evt)  # Stripe redelivers: same id, newly signed
    assert again.status_code == 200
    assert again.json() == {"received": True, "duplicate": True}
    assert await stored(superuser_engine) == (1, 1)


async def test_a_signature_with_another_secret_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine
) -> None:
    await assert_refused(await deliver(client, customer_created(), secret=OTHER), superuser_engine)


async def test_a_tampered_body_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine
) -> None:
    evt = customer_created()
    body = body_of(evt)
    signature = sign(body, ACTIVE)
    # One byte of the event id changed: still JSON, still an event, no longer what was signed.
    at = body.index(str(evt["id"]).encode()) + len(str(evt["id"])) - 1
    tampered = body[:at] + (b"A" if body[at : at + 1] != b"A" else b"B") + body[at + 1 :]
    assert sum(a != b for a, b in zip(body, tampered, strict=True)) == 1
    await assert_refused(await post(client, tampered, signature), superuser_engine)


YEAR = 365 * 24 * 3600


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (-10 * YEAR, False),
        (-TOLERANCE - 5, False),  # a replay
        (-TOLERANCE + 30, True),
        (0, True),
        (TOLERANCE - 30, True),  # a sender's clock a little ahead
        (TOLERANCE + 5, False),
        (10 * YEAR, False),  # issue 15, defect 10: was accepted and stored
    ],
    ids=lambda v: str(v),
)
async def test_the_signature_timestamp_is_within_tolerance_both_ways(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine, offset: int, accepted: bool
) -> None:
    when = int(time.time()) + offset
    response = await deliver(client, customer_created(), timestamp=when)
    if accepted:
        await assert_accepted(response, superuser_engine)
    else:
        await assert_refused(response, superuser_engine)


@pytest.mark.parametrize("offset", [TOLERANCE + 5, 10 * YEAR])
async def test_an_event_created_in_the_future_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine, offset: int
) -> None:
    evt = {**customer_created(), "created": int(time.time()) + offset}
    await assert_refused(await deliver(client, evt), superuser_engine)


@pytest.mark.parametrize("signature", [None, "", "t=1700000000", "v1=deadbeef", "garbage"])
async def test_a_missing_or_malformed_header_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine, signature: str | None
) -> None:
    await assert_refused(
        await post(client, body_of(customer_created()), signature), superuser_engine
    )


@pytest.mark.parametrize("order", ["other first", "active first"])
async def test_one_matching_v1_among_several_is_accepted(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine, order: str
) -> None:
    # While a secret rolls, Stripe signs with each of the endpoint's secrets.
    body = body_of(customer_created())
    secrets = [OTHER, ACTIVE] if order == "other first" else [ACTIVE, OTHER]
    await assert_accepted(await post(client, body, sign_many(body, secrets)), superuser_engine)


async def test_several_v1_none_matching_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine
) -> None:
    body = body_of(customer_created())
    signature = sign_many(body, [OTHER, OLD])
    await assert_refused(await post(client, body, signature), superuser_engine)


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"id": "evt_1", "type": ',
        b"\xff\xfe not UTF-8",
        b"[]",
        b'"a string"',
        b"{}",
        b'{"id": "evt_1"}',
    ],
    ids=["text", "truncated", "not-utf8", "array", "string", "empty-object", "not-an-event"],
)
async def test_a_signed_body_that_is_not_an_event_is_refused(
    client: httpx.AsyncClient, superuser_engine: AsyncEngine, body: bytes
) -> None:
    await assert_refused(await post(client, body, sign(body, ACTIVE)), superuser_engine)


async def test_two_configured_secrets_both_verify(
    configured_app: Callable[..., AbstractAsyncContextManager[FastAPI]],
    superuser_engine: AsyncEngine,
) -> None:
    async with (
        configured_app(stripe_webhook_secret=f"{OLD},{ACTIVE}") as app,
        asgi_client(app) as client,
    ):
        await assert_accepted(
            await deliver(client, customer_created(), secret=OLD), superuser_engine
        )
        await assert_accepted(
            await deliver(client, customer_created(), secret=ACTIVE), superuser_engine, count=2
        )
        refused = await deliver(client, customer_created(), secret=OTHER)
        assert refused.status_code == 400
        assert refused.headers["content-type"].startswith(PROBLEM_JSON)
        assert await stored(superuser_engine) == (2, 2)
