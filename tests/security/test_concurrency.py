"""Every protection that counts, raced: N simultaneous requests, and the count holds exactly.

The sequential suites (test_login_throttling, test_rate_limits) prove each rule one request at
a time; an attacker sends them together. Here each counting protection gets a burst of ``N``
requests at once, and the number let through must be exactly what the rule allows: in Redis,
and in this process's memory (where the counters live while Redis is away).

Found from outside (issue 15, defect 4): 20 simultaneous wrong passwords for one account were
all checked, because the back-off was read before the slow password hash and written after it.

| protection | burst | let through |
|---|---|---|
| log-in back-off (per account) | N wrong passwords | ``free + 1`` judged (401), the rest 429 |
| log-in lock (per account) | bursts until locked | ``lock_after`` judged, then 429 |
| log-in limit (per IP) | N log-ins, N addresses | the quota, the rest 429 |
| API quota (per user) | N reads | the quota |
| token creation (per user) | N creations | the quota, and that many tokens stored |
| sign-up (per IP) | N sign-ups | the quota, and that many clinics stored |
| Stripe webhook (per event id) | N deliveries of one event | one stored, N - 1 duplicates |
| TOTP code (single use) | ``test_mfa.py::test_racing_requests_with_one_code_get_one_session`` |
| double booking | ``test_appointments.py::test_concurrent_overlapping_bookings_exactly_one_wins`` |

(The last two live with their features: one code, one booking wins.)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.billing.plans import Plan
from fixtures.factories import DEFAULT_PASSWORD
from tests.harness.api import assert_problem, login, signup
from tests.harness.billing import PRICES, deliver, stored
from tests.harness.plugin import asgi_client
from tests.harness.stripe import events as fake
from tests.security.test_rate_limits import assert_refused, fresh_ip

N = 20
STORES = pytest.mark.parametrize("store", ["redis", "memory"])


def in_store(store: str) -> dict[str, Any]:
    """Settings keeping the counters in ``store``."""
    return {} if store == "redis" else {"redis_url": None}


async def burst(make: Callable[[int], Awaitable[httpx.Response]]) -> list[httpx.Response]:
    return list(await asyncio.gather(*(make(i) for i in range(N))))


def statuses(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(a.status_code for a in answers)


def judged(answers: list[httpx.Response]) -> int:
    """How many answers judged the password (the rest were refused before the hash)."""
    for answer in answers:
        if answer.status_code == 429:
            assert_problem(answer, 429, "login-throttled")
        else:
            assert_problem(answer, 401, "invalid-credentials")
    return statuses(answers)[401]


@STORES
async def test_simultaneous_guesses_are_judged_at_most_free_plus_one(configured_app, world, store):
    clinic = await world.clinic()
    email = clinic.owner.user.email
    # The third failure locks the account (for minutes): a first back-off block lasts 1 s, which
    # a burst on a loaded machine can outlast, judging a fourth guess after it, not beside it.
    guard = {"login_free_failures": 2, "login_lockout_failures": 3}
    async with (
        configured_app(**guard, **in_store(store)) as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        answers = await burst(lambda i: login(http, email, f"wrong guess {i}"))
    assert judged(answers) == 3
    assert app.state.password_pool.checked == 3  # the refused ones never reached the hash


@STORES
async def test_bursts_lock_the_account_after_exactly_lock_after_failures(
    configured_app, world, store
):
    clinic = await world.clinic()
    email = clinic.owner.user.email
    guard = {"login_free_failures": 1, "login_lockout_failures": 3, "login_lockout_minutes": 1}
    async with (
        configured_app(**guard, **in_store(store)) as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        first = await burst(lambda i: login(http, email, f"wrong {i}"))  # 1 free, 1 backs off 1 s
        await asyncio.sleep(1.2)
        second = await burst(lambda i: login(http, email, f"wrong again {i}"))  # the 3rd locks
        right = await burst(lambda _: login(http, email, DEFAULT_PASSWORD))
    assert [judged(first), judged(second)] == [2, 1]
    assert statuses(right) == {429: N}
    assert all(50 <= int(a.headers["Retry-After"]) <= 60 for a in right)


@STORES
async def test_the_per_ip_log_in_limit_holds_under_a_burst(configured_app, store):
    async with (
        configured_app(rate_limit_scale=1, rate_limit_login="5/minute", **in_store(store)) as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        answers = await burst(lambda i: login(http, f"nobody{i}@example.org", "wrong"))
    assert statuses(answers) == {401: 5, 429: N - 5}
    for refused in (a for a in answers if a.status_code == 429):
        assert_refused(refused, "login")


@STORES
async def test_the_per_user_quota_holds_under_a_burst(configured_app, world, store):
    clinic = await world.clinic()
    async with (
        configured_app(rate_limit_scale=1, rate_limit_user="5/minute", **in_store(store)) as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        answers = await burst(lambda _: http.get("/api/v1/auth/me", headers=clinic.owner.headers))
    assert statuses(answers) == {200: 5, 429: N - 5}
    for refused in (a for a in answers if a.status_code == 429):
        assert_refused(refused, "user")


async def test_token_creation_quota_holds_and_stores_only_what_it_allowed(configured_app, world):
    clinic = await world.clinic()
    async with (
        configured_app(rate_limit_scale=1, rate_limit_token_create="3/hour") as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        answers = await burst(
            lambda i: http.post(
                "/api/v1/auth/tokens", json={"name": f"script {i}"}, headers=clinic.owner.headers
            )
        )
        listed = await http.get("/api/v1/auth/tokens", headers=clinic.owner.headers)
    assert statuses(answers) == {201: 3, 429: N - 3}
    assert len(listed.json()) == 1 + 3  # the world's own token and the three allowed


async def test_the_sign_up_quota_holds_and_opens_only_what_it_allowed(
    configured_app, superuser_engine
):
    async with superuser_engine.connect() as connection:
        before = await connection.scalar(text("SELECT count(*) FROM clinics"))
    async with (
        configured_app(rate_limit_scale=1, rate_limit_signup="3/hour") as app,
        asgi_client(app, client_ip=fresh_ip()) as http,
    ):
        answers = await burst(lambda i: signup(http, email=f"owner-{uuid.uuid4().hex}@example.org"))
    async with superuser_engine.connect() as connection:
        after = await connection.scalar(text("SELECT count(*) FROM clinics"))
    assert statuses(answers) == {201: 3, 429: N - 3}, [a.text for a in answers]
    assert after - before == 3


async def test_one_stripe_event_delivered_at_once_many_times_is_stored_once(
    client, world, stripe, superuser_engine
):
    clinic = await world.clinic()
    sub = fake.subscription(
        customer=fake.new_id("cus_"),
        status="active",
        price=PRICES[Plan.starter],
        clinic_id=str(clinic.id),
    )
    stripe.put_subscription(sub)
    event = fake.event("customer.subscription.created", sub)
    answers = await burst(lambda _: deliver(client, event))
    assert statuses(answers) == {200: N}
    assert Counter(a.json()["duplicate"] for a in answers) == {False: 1, True: N - 1}
    assert await stored(superuser_engine) == (1, 1)  # one row, one job
