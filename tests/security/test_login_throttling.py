"""Guessing one account's password: back-off after a few failures, a lock after more, lifted
by the clinic's owner (only for an account that opens no other clinic); and the answers never
tell whether the address has an account.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import update

from app.auth.models import Membership, Role, User
from app.settings import Settings
from fixtures.clinics import add_member
from fixtures.factories import DEFAULT_PASSWORD, UserFactory, create
from tests.harness import browser, canary
from tests.harness.api import PROBLEM_JSON, assert_problem, login, login_request, problem_type
from tests.harness.plugin import asgi_client
from tests.harness.scrapes import scrape, value
from tests.harness.world import Actor, World

THROTTLED = problem_type("login-throttled")
EVENTS = "vetify_security_events_total"
# 1 free failure, then 1 s of back-off, and the 3rd failure locks for a minute.
GUARD = {"login_free_failures": 1, "login_lockout_failures": 3, "login_lockout_minutes": 1}


def shape(response: httpx.Response) -> tuple[int, str | None, str | None, str | None]:
    """What an attacker sees, minus nothing: status, problem type, detail, Retry-After."""
    body = response.json()
    return (
        response.status_code,
        body.get("type"),
        body.get("detail"),
        response.headers.get("retry-after"),
    )


async def guess(http: httpx.AsyncClient, email: str) -> list[httpx.Response]:
    """Three wrong guesses with the back-off respected, then the right password."""
    answers = [await login(http, email, "wrong guess 1")]
    answers.append(await login(http, email, "wrong guess 2"))  # now backs off 1 s
    answers.append(await login(http, email, DEFAULT_PASSWORD))  # refused while backing off
    await asyncio.sleep(1.1)
    answers.append(await login(http, email, "wrong guess 3"))  # locks for a minute
    answers.append(await login(http, email, DEFAULT_PASSWORD))
    return answers


async def unlock(
    http: httpx.AsyncClient, world: World, manager: Actor, user_id: uuid.UUID
) -> httpx.Response:
    """``manager`` lifts the lock, from a session just logged in with a second factor."""
    return await http.post(
        f"/api/v1/staff/{user_id}/unlock",
        headers=browser.cookie_header(await world.step_up(manager)),
    )


@pytest.mark.mutation_targets(
    "app/auth/lockout.py::LoginGuard.from_settings",
    "app/auth/lockout.py::AccountThrottled.__init__",
)
async def test_failures_back_off_then_lock_and_an_owner_unlocks(
    configured_app, world, security_events
):
    clinic = await world.clinic()
    victim = clinic.actors[next(r for r in clinic.actors if r.value == "vet")]
    async with (
        configured_app(metrics_token=canary.METRICS_TOKEN, **GUARD) as app,
        asgi_client(app, client_ip="203.0.113.30") as http,
    ):
        before = await scrape(http, canary.METRICS_TOKEN)
        answers = await guess(http, victim.user.email)
        # The lock holds against the right password from anywhere.
        async with asgi_client(app, client_ip="203.0.113.31") as elsewhere:
            still = await login(elsewhere, victim.user.email, DEFAULT_PASSWORD)
        unlocked = await unlock(http, world, clinic.owner, victim.user.id)
        after = await login(http, victim.user.email, DEFAULT_PASSWORD)
        scraped = await scrape(http, canary.METRICS_TOKEN)

    assert [a.status_code for a in answers] == [401, 401, 429, 401, 429]
    for refused in (answers[2], answers[4], still):
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert refused.json()["type"] == THROTTLED
    assert answers[2].headers["retry-after"] == "1"
    assert answers[2].json()["detail"] == (
        "Too many failed log-ins for this account; try again in 1 s."
    )
    assert 50 <= int(answers[4].headers["retry-after"]) <= 60  # login_lockout_minutes: 1
    assert still.status_code == 429
    assert unlocked.status_code == 204
    assert after.status_code == 200
    # The security stream: each failure (the refusals while blocked as "throttled"), the lock
    # once, its lifting by the owner; the victim's address nowhere.
    said = [(str(event), fields["outcome"]) for event, fields in security_events]
    assert said == [
        ("login_failed", "refused"),
        ("login_failed", "refused"),
        ("login_failed", "throttled"),
        ("lockout", "locked"),
        ("login_failed", "refused"),
        ("login_failed", "throttled"),
        ("login_failed", "throttled"),
        ("unlock", "unlocked"),
        ("login_succeeded", "succeeded"),
    ]
    assert security_events[0][1]["client_ip"] == "203.0.113.30"
    assert security_events[7][1]["target_user_id"] == str(victim.user.id)
    assert security_events[7][1]["user_id"] == str(clinic.owner.user.id)
    assert victim.user.email not in repr(security_events)
    # The metrics count the same stream, by event and outcome (what the incident alerts read).
    counted = {
        (event, outcome): value(scraped, EVENTS, event=event, outcome=outcome)
        - value(before, EVENTS, event=event, outcome=outcome)
        for event, outcome in set(said)
    }
    assert counted == {pair: said.count(pair) for pair in set(said)}


async def test_a_success_forgets_the_failures(configured_app, world):
    clinic = await world.clinic()
    email = clinic.owner.user.email
    async with configured_app(**GUARD) as app, asgi_client(app, client_ip="203.0.113.32") as http:
        statuses = [
            (await login(http, email, password)).status_code
            for password in ("wrong", DEFAULT_PASSWORD, "wrong", DEFAULT_PASSWORD)
        ]
    assert statuses == [401, 200, 401, 200]


async def test_an_unknown_address_is_answered_exactly_like_a_real_account(configured_app, world):
    clinic = await world.clinic()
    real = clinic.owner.user.email
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    async with configured_app(**GUARD) as app:
        async with asgi_client(app, client_ip="203.0.113.33") as http:
            for_real = await guess(http, real)
        async with asgi_client(app, client_ip="203.0.113.34") as http:
            for_unknown = await guess(http, unknown)
    assert [shape(a) for a in for_unknown] == [shape(a) for a in for_real]


async def test_a_wrong_password_costs_the_same_time_for_both(configured_app, world):
    """Both run one argon2 verification; skipping it for an unknown address would make that
    answer many times faster. Interleaved, medians, a 2x band: noise passes, a skip does not.
    With production's argon2id cost (the stages hash cheaply), so that the hash dominates."""
    clinic = await world.clinic()
    real, unknown = clinic.owner.user.email, f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    production = {
        "time_cost": Settings.model_fields["password_hash_time_cost"].default,
        "memory_cost": Settings.model_fields["password_hash_memory_kib"].default,
        "parallelism": Settings.model_fields["password_hash_parallelism"].default,
    }
    await world.set_password_hash(
        clinic.owner.user, PasswordHasher(**production).hash(DEFAULT_PASSWORD)
    )
    timings: dict[str, list[float]] = {real: [], unknown: []}
    # Back-off would answer early for both alike; here every guess is checked in full.
    async with (
        configured_app(
            login_free_failures=50,
            login_lockout_failures=100,
            password_hash_time_cost=production["time_cost"],
            password_hash_memory_kib=production["memory_cost"],
            password_hash_parallelism=production["parallelism"],
        ) as app,
        asgi_client(app, client_ip="203.0.113.35") as http,
    ):
        for round_ in range(7):
            for email in (real, unknown):
                started = time.perf_counter()
                answer = await login(http, email, f"wrong {round_}")
                timings[email].append(time.perf_counter() - started)
                assert answer.status_code == 401
    ratio = statistics.median(timings[real]) / statistics.median(timings[unknown])
    assert 0.5 < ratio < 2.0, timings


async def test_every_failed_log_in_answers_alike(client: httpx.AsyncClient, world: World) -> None:
    """No answer tells a right password from a wrong one (issue 15, defect 7: the right
    password with a clinic the user is not in answered 404 "not a member", a wrong one 401; it
    also confirmed a disabled member's password). Each case is its own user, so that the
    per-account back-off never answers instead."""
    ours, theirs = (
        await world.clinic((Role.vet, Role.technician, Role.receptionist)),
        (await world.clinic(())),
    )
    vet, technician, receptionist = (
        ours.actors[role].user for role in (Role.vet, Role.technician, Role.receptionist)
    )
    async with world.session(ours.id) as session:
        await session.execute(
            update(Membership).where(Membership.user_id == technician.id).values(active=False)
        )
        await session.execute(update(User).where(User.id == receptionist.id).values(active=False))
    cases = {
        "a wrong password": login_request(ours.owner.user.email, "not the password at all"),
        "an unknown email": login_request(f"nobody.{uuid.uuid4().hex}@example.org"),
        "the right password, another clinic": login_request(vet.email, clinic_id=str(theirs.id)),
        "the right password, no such clinic": login_request(
            theirs.owner.user.email, clinic_id=str(uuid.uuid4())
        ),
        "the right password, a membership ended": login_request(
            technician.email, clinic_id=str(ours.id)
        ),
        "the right password, a disabled user": login_request(receptionist.email),
    }
    answers = {}
    for case, request in cases.items():
        response = await client.post(**request)
        body = assert_problem(response, 401, "invalid-credentials")
        answers[case] = (response.status_code, body["title"], body["detail"])
    assert len(set(answers.values())) == 1, answers


# Two free failures, the third locks: an account is locked without waiting out a back-off.
LOCK_AT_ONCE = {"login_free_failures": 2, "login_lockout_failures": 3, "login_lockout_minutes": 1}


async def lock(http: httpx.AsyncClient, email: str) -> None:
    for attempt in range(LOCK_AT_ONCE["login_lockout_failures"]):
        assert (await login(http, email, f"wrong guess {attempt}")).status_code == 401
    assert_problem(await login(http, email), 429, "login-throttled")


async def test_a_clinic_lifts_the_lock_only_of_an_account_that_opens_no_other_clinic(
    configured_app, world: World
) -> None:
    """The lock protects the account, and the account opens every clinic its user works for
    (issue 15, defect 6: a user of clinics A and B was locked; B's owner lifted the lock and
    guessing resumed against the account that also opens A). While the account opens another
    clinic, no manager of any of its clinics lifts the lock: 409 problem+json, and the lock
    holds against the right password. Once it opens one clinic only, that clinic's managers
    may lift it, and no other clinic's."""
    here, there = [await world.clinic((Role.admin,)) for _ in range(2)]
    async with world.session() as session:
        user = await create(session, UserFactory)
    for clinic, role in ((here, Role.vet), (there, Role.technician)):
        async with world.session(clinic.id) as session:
            await add_member(session, user, role)
    managers = {
        f"the {role} of {name}": clinic.actors[role]
        for name, clinic in (("here", here), ("there", there))
        for role in (Role.owner, Role.admin)
    }

    async with configured_app(**LOCK_AT_ONCE) as app, asgi_client(app) as http:
        await lock(http, user.email)
        shared = {
            who: await unlock(http, world, manager, user.id) for who, manager in managers.items()
        }
        still_locked = await login(http, user.email, clinic_id=str(here.id))
        # The account now opens only this clinic: ours to lift, and not the other's.
        async with world.session(there.id) as session:
            await session.execute(
                update(Membership).where(Membership.user_id == user.id).values(active=False)
            )
        theirs = await unlock(http, world, managers["the owner of there"], user.id)
        ours = await unlock(http, world, managers["the admin of here"], user.id)
        after = await login(http, user.email, clinic_id=str(here.id))

    for who, answer in {**shared, "there, after leaving it": theirs}.items():
        body = assert_problem(answer, 409, "conflict")
        assert "wait" in body["detail"], (who, body)
    assert_problem(still_locked, 429, "login-throttled")
    assert ours.status_code == 204, ours.text
    assert after.status_code == 200, after.text
