"""Rate limits, attacked: floods per IP, per user, per token and per clinic; forged
``X-Forwarded-For``; the window's edge; Redis going away and coming back.

Every test configures the limits it attacks (small quotas, scale 1) on an app of its own, and
talks from an address of its own, so the session's shared Redis holds no count from elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from app.auth.models import Role
from app.billing.models import BillingAccount
from app.billing.plans import PLANS, Plan
from tests.harness.api import assert_problem, login, signup
from tests.harness.plugin import asgi_client
from tests.harness.services import choose_provider, redis

_addresses = itertools.count(1)
BOGUS = {"Authorization": "Bearer vtk_not-a-real-token"}


@asynccontextmanager
async def serving(
    configured_app, client_ip: str, **changes: object
) -> AsyncIterator[httpx.AsyncClient]:
    """An app with ``changes`` (limits at scale 1 unless given) and a client at ``client_ip``."""
    changes.setdefault("rate_limit_scale", 1)
    async with configured_app(**changes) as app, asgi_client(app, client_ip=client_ip) as http:
        yield http


def fresh_ip() -> str:
    """A documentation-range address no other test uses (RFC 5737)."""
    n = next(_addresses) + uuid.uuid4().int % 50_000
    return f"198.51.{n // 250 % 250}.{n % 250 + 1}"


def policy(response: httpx.Response, name: str) -> dict[str, int]:
    """The ``RateLimit`` and ``RateLimit-Policy`` parameters of policy ``name``."""
    found: dict[str, int] = {}
    for header in ("RateLimit-Policy", "RateLimit"):
        match = re.search(rf'"{name}"((?:;[a-z]+=\d+)+)', response.headers.get(header, ""))
        assert match, f"{header} lacks policy {name!r}: {response.headers.get(header)!r}"
        found |= {k: int(v) for k, v in re.findall(r";([a-z]+)=(\d+)", match.group(1))}
    return found


def assert_refused(response: httpx.Response, name: str) -> None:
    assert_problem(response, 429, "rate-limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert policy(response, name)["r"] == 0


async def test_anonymous_callers_are_limited_per_ip(configured_app):
    async with configured_app(rate_limit_scale=1, rate_limit_anonymous="5/minute") as app:
        attacker, bystander = fresh_ip(), fresh_ip()
        async with asgi_client(app, client_ip=attacker) as http:
            answers = [await http.get("/api/v1/pets", headers=BOGUS) for _ in range(6)]
        async with asgi_client(app, client_ip=bystander) as http:
            other = await http.get("/api/v1/pets", headers=BOGUS)

    assert [a.status_code for a in answers[:5]] == [401] * 5
    assert [policy(a, "anonymous")["r"] for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert policy(answers[0], "anonymous")["q"] == 5
    assert policy(answers[0], "anonymous")["w"] == 60
    assert_refused(answers[5], "anonymous")
    assert other.status_code == 401


async def test_login_is_limited_per_ip_whatever_the_account(configured_app, world):
    clinic = await world.clinic()
    async with serving(configured_app, fresh_ip(), rate_limit_login="3/minute") as http:
        tries = [
            # pragma: allowlist nextline secret - a wrong password, the point of the test
            await login(http, f"nobody{i}@example.com", "wrong password")
            for i in range(3)
        ]
        # The right password, once the quota is spent, is refused too: a guesser learns
        # nothing from the 4th answer.
        right = await login(http, clinic.owner.user.email)
    assert [t.status_code for t in tries] == [401] * 3
    assert_refused(right, "login")


async def test_signup_is_limited_per_ip(configured_app, census_unchanged):
    async with serving(configured_app, fresh_ip(), rate_limit_signup="1/hour") as http:
        first = await signup(http, {})  # invalid, still counted
        async with census_unchanged():
            second = await signup(http, clinic_name="Flood Vets", owner_name="Mallory")
    assert first.status_code == 422
    assert_refused(second, "signup")


@pytest.mark.mutation_targets("app/auth/deps.py::authenticate")
async def test_users_tokens_and_clinics_each_have_a_quota(configured_app, world):
    """Per user (all their credentials), per token, and per clinic (its plan's quota, shared by
    the staff): one clinic spending its quota leaves another clinic untouched."""
    first, second = await world.clinic(), await world.clinic()
    roles = list(first.actors)
    assert PLANS[Plan.starter].api_requests_per_minute == 600
    async with serving(
        configured_app,
        fresh_ip(),
        rate_limit_scale=0.01,  # starter: 6 per minute for the clinic
        rate_limit_user="40000/minute",
        rate_limit_token="40000/minute",
    ) as http:
        spent = [
            await http.get("/api/v1/auth/me", headers=first.actors[roles[i % 3]].headers)
            for i in range(7)
        ]
        elsewhere = await http.get("/api/v1/auth/me", headers=second.owner.headers)
    assert [s.status_code for s in spent[:6]] == [200] * 6
    assert policy(spent[0], "clinic")["q"] == 6
    assert_refused(spent[6], "clinic")
    assert elsewhere.status_code == 200
    assert policy(elsewhere, "clinic")["r"] == 5

    async with serving(configured_app, fresh_ip(), rate_limit_user="2/minute") as http:
        owner = first.owner
        session = await world.login(owner)
        by_token = await http.get("/api/v1/auth/me", headers=owner.headers)
        http.cookies.set("vetify_session", session)
        by_cookie = await http.get("/api/v1/auth/me")
        third = await http.get("/api/v1/auth/me", headers=owner.headers)
        colleague = await http.get("/api/v1/auth/me", headers=first.actors[roles[1]].headers)
    assert [by_token.status_code, by_cookie.status_code] == [200, 200]
    assert_refused(third, "user")
    assert colleague.status_code == 200  # a quota per user, not one for the clinic's staff

    async with serving(configured_app, fresh_ip(), rate_limit_token="1/minute") as http:
        vet = first.actors[roles[2]]
        once = await http.get("/api/v1/auth/me", headers=vet.headers)
        twice = await http.get("/api/v1/auth/me", headers=vet.headers)
        # The same user's other token has a quota of its own.
        other = await world.actor(first.id, vet.user)
        another = await http.get("/api/v1/auth/me", headers=other.headers)
    assert once.status_code == 200
    assert_refused(twice, "token")
    assert another.status_code == 200


async def test_the_plan_sets_the_clinic_quota(configured_app, world, superuser_engine):
    clinic = await world.clinic()
    async with superuser_engine.begin() as connection:
        await connection.execute(
            update(BillingAccount)
            .where(BillingAccount.tenant_id == clinic.id)
            .values(plan=Plan.enterprise)
        )
    async with serving(configured_app, fresh_ip(), rate_limit_scale=0.01) as http:
        answer = await http.get("/api/v1/auth/me", headers=clinic.owner.headers)
    assert policy(answer, "clinic")["q"] == PLANS[Plan.enterprise].api_requests_per_minute // 100


@pytest.mark.mutation_targets("app/auth/deps.py::per_user")
async def test_token_creation_has_its_own_tighter_limit_per_user(configured_app, world):
    clinic = await world.clinic()
    colleague = clinic.actors[Role.admin]
    async with serving(configured_app, fresh_ip(), rate_limit_token_create="1/hour") as http:
        made = await http.post(
            "/api/v1/auth/tokens", json={"name": "ci"}, headers=clinic.owner.headers
        )
        again = await http.post(
            "/api/v1/auth/tokens", json={"name": "ci2"}, headers=clinic.owner.headers
        )
        # Another user of the same clinic, from the same address, has a quota of their own.
        theirs = await http.post(
            "/api/v1/auth/tokens", json={"name": "ci3"}, headers=colleague.headers
        )
        listed = await http.get("/api/v1/auth/tokens", headers=clinic.owner.headers)
    assert made.status_code == 201
    assert_refused(again, "token-create")
    assert theirs.status_code == 201, theirs.text
    assert len(listed.json()) == 2  # the world's token and the one made; not the refused one


async def test_a_forged_forwarded_for_is_ignored_unless_from_a_trusted_proxy(configured_app):
    peer = fresh_ip()
    forged = [{"X-Forwarded-For": fresh_ip(), **BOGUS} for _ in range(3)]
    async with serving(configured_app, peer, rate_limit_anonymous="2/minute") as http:
        untrusted = [await http.get("/api/v1/pets", headers=h) for h in forged]
    # Three "different clients" from one untrusted peer are one client.
    assert [a.status_code for a in untrusted] == [401, 401, 429]

    proxy = fresh_ip()
    async with serving(
        configured_app, proxy, rate_limit_anonymous="2/minute", trusted_proxies=[proxy]
    ) as http:
        trusted = [await http.get("/api/v1/pets", headers=h) for h in forged]
        # The proxy appends the address it saw; what the client wrote before it is not
        # believed: the right-most untrusted address is the client.
        client = fresh_ip()
        chained = [
            await http.get(
                "/api/v1/pets",
                headers={"X-Forwarded-For": f"{fresh_ip()}, {client}", **BOGUS},
            )
            for _ in range(3)
        ]
    assert [a.status_code for a in trusted] == [401, 401, 401]
    assert [a.status_code for a in chained] == [401, 401, 429]


async def test_the_window_moves_so_its_edge_allows_no_double_burst(configured_app):
    """A fixed window would take 4 requests just before its end and 4 more just after; the
    moving window still counts the first 4 until they are a window old."""
    async with serving(configured_app, fresh_ip(), rate_limit_anonymous="4/4 seconds") as http:
        first = await http.get("/api/v1/pets", headers=BOGUS)
        await asyncio.sleep(3.2)
        late = [await http.get("/api/v1/pets", headers=BOGUS) for _ in range(3)]
        await asyncio.sleep(1.2)  # the first request is now a window old; the late 3 not
        after_edge = [await http.get("/api/v1/pets", headers=BOGUS) for _ in range(2)]
    assert first.status_code == 401
    assert [a.status_code for a in late] == [401] * 3
    assert [a.status_code for a in after_edge] == [401, 429]


async def limit_keys(url: str) -> list[bytes]:
    client = Redis.from_url(url)
    try:
        return list(await client.keys("vetify:rl*"))
    finally:
        await client.aclose()


@pytest.fixture
def own_redis(pytestconfig):
    """A Redis of this test's own, which it stops and starts."""
    with redis(choose_provider()) as server:
        yield server


async def test_redis_outage_falls_back_to_memory_and_comes_back(
    configured_app, world, own_redis, caplog
):
    clinic = await world.clinic()
    caplog.set_level(logging.INFO, logger="vetify.ratelimit")
    ip = fresh_ip()
    async with configured_app(
        redis_url=own_redis.url, rate_limit_scale=1, rate_limit_login="8/minute"
    ) as app:
        limiter = app.state.limiter
        limiter.retry_seconds = 1.0
        async with asgi_client(app, client_ip=ip) as http:
            served = await http.get("/api/v1/auth/me", headers=clinic.owner.headers)
            assert served.status_code == 200
            assert await limit_keys(own_redis.url), "the limiter does not use Redis"
            assert limiter.backend == "redis"

            own_redis.control.stop()
            try:
                started = time.monotonic()
                during = await http.get("/api/v1/auth/me", headers=clinic.owner.headers)
                assert time.monotonic() - started < 3, "a dead Redis stalled the request"
                assert during.status_code == 200
                assert limiter.degradations == 1
                assert limiter.backend == "memory (Redis unreachable)"
                # Login fails closed: a quarter of its quota while each process counts alone.
                logins = [
                    # pragma: allowlist nextline secret - a wrong password, the point
                    await login(http, "x@example.com", "wrong password")
                    for _ in range(3)
                ]
                assert [a.status_code for a in logins] == [401, 401, 429]
            finally:
                own_redis.control.start()

            await asyncio.sleep(limiter.retry_seconds + 0.2)
            assert not await limit_keys(own_redis.url)  # restarted empty
            back = await http.get("/api/v1/auth/me", headers=clinic.owner.headers)
            assert back.status_code == 200
            assert limiter.backend == "redis"
            assert await limit_keys(own_redis.url), "the limiter did not return to Redis"
    messages = [r.getMessage() for r in caplog.records if r.name == "vetify.ratelimit"]
    assert any("kept in Redis" in m for m in messages)
    assert any("fall back to this process's memory" in m for m in messages)
    assert any("back in Redis" in m for m in messages)


async def test_without_redis_the_limits_live_in_memory_and_say_so(configured_app, caplog):
    caplog.set_level(logging.INFO, logger="vetify.ratelimit")
    async with configured_app(
        redis_url=None, rate_limit_scale=1, rate_limit_anonymous="1/minute"
    ) as app:
        assert app.state.limiter.backend == "memory"
        async with asgi_client(app, client_ip=fresh_ip()) as http:
            answers = [await http.get("/api/v1/pets", headers=BOGUS) for _ in range(2)]
    assert [a.status_code for a in answers] == [401, 429]
    assert any("memory (no Redis configured)" in r.getMessage() for r in caplog.records)
