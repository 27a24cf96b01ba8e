"""The rate limiter (app/kit/ratelimit.py) in this process's memory: quotas spent per policy and
key, the decisions as the IETF headers of any answer, a 429 that says when to come back, the
counters and scripts of the login back-off. Redis that cannot be reached (a quarter of a
fail-closed quota), a real one going away and coming back: tests/integration/
test_rate_limiter.py; through the app, tests/security/test_rate_limits.py."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.kit.problems import PROBLEM_BASE
from app.kit.ratelimit import (
    STATE_KEY,
    Decision,
    Limiter,
    Policy,
    RateLimitHeaders,
    TooManyRequests,
    headers_for,
    record,
)
from tests.harness.limits import COUNT, LOGIN, READS


def test_a_policy_scales_its_amount_but_never_to_nothing() -> None:
    assert Policy.of("x", "30/minute").item.amount == 30
    assert Policy.of("x", "30/minute", scale=0.5).item.amount == 15
    assert Policy.of("x", "30/minute", scale=0.001).item.amount == 1
    assert Policy.of("x", "3/minute", scale=0.9).item.amount == 2  # floored
    assert Policy.of("x", "30/hour").window_seconds == 3600
    assert Policy.of("x", "30/minute", fail_closed=True).fail_closed


async def test_a_quota_is_spent_per_policy_and_key_then_refused() -> None:
    limiter = Limiter(None)
    assert limiter.backend == "memory"
    assert not limiter.degraded
    decisions = [await limiter.hit(READS, "1.2.3.4") for _ in range(9)]
    assert [d.allowed for d in decisions] == [True] * 8 + [False]
    assert [d.remaining for d in decisions] == [7, 6, 5, 4, 3, 2, 1, 0, 0]
    assert {d.limit for d in decisions} == {8}
    assert all(1 <= d.reset_after <= 60 for d in decisions)
    assert decisions[0].reset_after >= 59
    # Another key, and another policy for the same key, have their own quota.
    assert (await limiter.hit(READS, "5.6.7.8")).remaining == 7
    assert (await limiter.hit(LOGIN, "1.2.3.4")).remaining == 7
    # Without Redis, memory is the only store: a fail-closed quota is not cut.
    assert (await limiter.hit(LOGIN, "1.2.3.4")).limit == 8


async def test_counters_and_scripts_work_in_memory() -> None:
    limiter = Limiter(None)
    assert await limiter.seconds_left("blocked") == 0.0
    assert await limiter.atomic(COUNT, ["blocked"], [30_000]) == [1]
    assert await limiter.atomic(COUNT, ["blocked"], [30_000]) == [2]
    left = await limiter.seconds_left("blocked")
    assert 25 < left <= 30
    await limiter.forget("blocked", "other")
    assert await limiter.seconds_left("blocked") == 0.0
    assert await limiter.atomic(COUNT, ["blocked"], [30_000]) == [1]
    await limiter.close()


def test_the_headers_name_each_policy_once_with_its_latest_decision() -> None:
    decisions = [
        Decision(READS, True, 8, 7, 60),
        Decision(LOGIN, True, 2, 1, 30),
        Decision(READS, True, 8, 6, 59),
    ]
    assert headers_for(decisions) == {
        "RateLimit-Policy": '"reads";q=8;w=60, "login";q=2;w=60',
        "RateLimit": '"reads";r=6;t=59, "login";r=1;t=30',
    }


def test_a_refusal_is_kept_for_the_headers_and_raised_as_a_429_saying_when() -> None:
    scope: Scope = {"type": "http", "state": {"other": 1}}
    allowed = Decision(READS, True, 8, 1, 12)
    refused = Decision(LOGIN, False, 2, 0, 17)
    record(scope, allowed)
    with pytest.raises(TooManyRequests) as raised:
        record(scope, refused)
    assert scope["state"] == {"other": 1, STATE_KEY: [allowed, refused]}
    problem = raised.value
    assert problem.status == 429
    assert problem.type_uri() == PROBLEM_BASE + "rate-limited"
    assert problem.detail == "The login limit is 2 requests per 60 s; try again in 17 s."
    assert problem.headers == {"Retry-After": "17"}


async def test_every_answer_carries_the_decisions_its_request_collected() -> None:
    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/limited":
            record(scope, Decision(READS, True, 8, 3, 40))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-own", b"1")]})
        await send({"type": "http.response.body", "body": b""})

    async def answer(path: str) -> dict[str, str]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await RateLimitHeaders(route)({"type": "http", "path": path}, _nothing, send)
        assert sent[1] == {"type": "http.response.body", "body": b""}
        return {k.decode(): v.decode() for k, v in sent[0]["headers"]}

    assert await answer("/limited") == {
        "x-own": "1",
        "ratelimit-policy": '"reads";q=8;w=60',
        "ratelimit": '"reads";r=3;t=40',
    }
    assert await answer("/free") == {"x-own": "1"}


async def test_other_connections_pass_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    scope: Scope = {"type": "lifespan"}
    await RateLimitHeaders(app)(scope, _nothing, _nowhere)
    assert seen == [scope]


async def _nothing() -> Message:
    raise AssertionError("nothing to receive")


async def _nowhere(message: Message) -> None:
    raise AssertionError(f"nothing to send: {message}")
