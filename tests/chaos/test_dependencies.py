"""Stripe, the mail relay, S3 and clamd down, slow or cutting connections, against `vetify serve`.

None of them is required to serve: the database is (a 503 while it is away, test_faults.py).
While one is away, what needs it answers honestly and what does not goes on as usual: a payment
is a 503 problem+json with Retry-After (billing-unavailable), an attachment upload a 503
(storage-unavailable) with S3 away, or stored *pending* with the scanner away (served once a job
has scanned it); a mail waits in its job. Readiness stays 200: none of them is a reason to take
the replica out of the load balancer. When the dependency is back, the same process carries on,
and no side effect happened twice: one Stripe customer per clinic whatever was retried (the fake
Stripe records every request and its idempotency key), one mail per ask, every acknowledged upload
readable with the bytes sent.

Each dependency is reached through a :class:`FaultProxy` of its own (``wired.proxies``), which
refuses, holds (a black hole), slows or resets connections.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.auth.mails import MAIL_PASSWORD_RESET
from fixtures import files
from tests.chaos.conftest import (
    CLAMD_TIMEOUT,
    SLACK,
    SMTP_TIMEOUT,
    STRIPE_TIMEOUT,
    Clinic,
    Outcome,
    Wired,
    call,
    new_clinic,
    smoke,
    sql,
    wait_for,
)
from tests.harness.api import PROBLEM_JSON
from tests.harness.mail import PASSWORD_RESET
from tests.harness.stripe.server import FakeStripe

DOWN = "503 problem"
STRIPE_WITHIN = 2 * STRIPE_TIMEOUT + 2 + SLACK
"""A checkout's longest answer with Stripe unreachable: two tries of the timeout (one SDK retry)
and its back-off."""
JOBS_WITHIN = 30.0
"""A job due now is done within this: the worker polls every 5 s, and retries back off 2 s."""


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults(wired: Wired) -> None:
    """Overrides the chaos stage's: these scenarios fault the wired server, which ``wired``
    puts right (and checks ready, the same process) after each."""


@pytest.fixture
async def clinic(wired: Wired) -> Any:
    async with new_clinic(wired.url, wired.live.database.superuser_url) as made:
        yield made


async def _ready(wired: Wired) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=wired.url, timeout=10) as http:
        return await call(http, "GET", "/health/ready")


def _problem(answer: dict[str, Any], slug: str) -> bool:
    body = answer.get("body") or {}
    return answer["kind"] == DOWN and str(body.get("type", "")).endswith("/" + slug)


# -- Stripe --------------------------------------------------------------------------------------
async def _checkout(clinic: Clinic) -> dict[str, Any]:
    return await call(clinic.http, "POST", "/api/v1/billing/checkout", json={"plan": "starter"})


def _customers_of(stripe: FakeStripe, clinic: Clinic) -> list[str]:
    return [
        c.object["id"] for c in stripe.customers.values() if c.params.get("email") == clinic.email
    ]


def _customer_keys(stripe: FakeStripe, clinic: Clinic) -> set[str | None]:
    return {
        r.idempotency_key
        for r in stripe.calls("POST", "/v1/customers")
        if r.params.get("email") == clinic.email
    }


async def test_stripe_down_is_a_503_with_retry_after_and_checkout_works_once_it_is_back(
    wired: Wired, clinic: Clinic, stripe: FakeStripe, chaos: Outcome
) -> None:
    tries = 2 if smoke() else 6
    proxy = wired.proxies["stripe"]
    proxy.refuse = True
    proxy.reset_all()
    down = [await _checkout(clinic) for _ in range(tries)]
    reads = await call(clinic.http, "GET", "/api/v1/customers")
    ready = await _ready(wired)
    proxy.heal()
    back = await _checkout(clinic)
    again = await _checkout(clinic)
    chaos.details.update(
        tries=tries,
        down=dict(Counter(a["kind"] for a in down)),
        slowest_down_seconds=round(max(a["seconds"] for a in down), 2),
        back=back["kind"],
        stripe_connections=proxy.connections,
        customers=len(_customers_of(stripe, clinic)),
    )
    assert all(_problem(a, "billing-unavailable") for a in down), down
    assert all(a["seconds"] < STRIPE_WITHIN for a in down), [a["seconds"] for a in down]
    assert reads["kind"] == "200", reads
    assert ready["kind"] == "200", ready
    assert back["kind"] == "200", back
    assert again["kind"] == "200", again
    # One customer for the clinic, made under one idempotency key, however often it was asked.
    assert len(_customers_of(stripe, clinic)) == 1
    assert len(_customer_keys(stripe, clinic)) == 1


async def test_stripe_slow_past_its_timeout_is_a_503_and_the_late_work_is_not_done_twice(
    wired: Wired, clinic: Clinic, stripe: FakeStripe, chaos: Outcome
) -> None:
    """Stripe answers, but after the client stopped waiting, and does the work all the same
    (``processed``): the customer it made then must be the one the next checkout gets, not a
    second one. Slower than usual but within the timeout is only slower."""
    # The customer's creation, and the SDK's retry of it, answer after the timeout.
    stripe.stall_next(2, seconds=STRIPE_TIMEOUT + 1, path_prefix="/v1/customers")
    stalled = await _checkout(clinic)
    # Stripe made the customer late, after the service had answered 503 and rolled back.
    await wait_for("the stalled customer made", lambda: _made(_customers_of(stripe, clinic)), 10)
    latency = 0.3
    proxy = wired.proxies["stripe"]
    proxy.latency = latency
    slowed = await _checkout(clinic)
    proxy.heal()
    asked = stripe.calls("POST", "/v1/customers")
    chaos.details.update(
        stalled=stalled["kind"],
        stalled_seconds=round(stalled["seconds"], 2),
        latency_seconds=latency,
        slowed=slowed["kind"],
        slowed_seconds=round(slowed["seconds"], 2),
        customer_requests=len(asked),
        customers=len(_customers_of(stripe, clinic)),
    )
    assert _problem(stalled, "billing-unavailable"), stalled
    assert stalled["seconds"] < STRIPE_WITHIN, stalled
    assert slowed["kind"] == "200", slowed
    assert slowed["seconds"] >= 2 * latency
    # Three requests to make the customer (two timed out), under one key: one customer.
    assert len(asked) == 3, asked
    assert len(_customer_keys(stripe, clinic)) == 1
    assert len(_customers_of(stripe, clinic)) == 1


async def _made(found: list[str]) -> list[str]:
    return found
