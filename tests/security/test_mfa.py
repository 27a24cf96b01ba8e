"""Attacks on the second factor and on clinics that require it.

* Login: without a code, with wrong codes (many), with codes outside the drift window, a code
  replayed (also by two racing requests), a recovery code used twice, old recovery codes after
  regeneration -- each 401 .../mfa-required, no session, nothing written; a wrong password
  says nothing about the second factor.
* Every route that takes an existing account's password (log-in, sign-up, accepting an
  invitation: found in the route table by their bodies) asks for its second factor as log-in
  does, and a missing or wrong code spends the account's back-off.
* A clinic that requires MFA: a member who has not enrolled is refused on every route of the
  OpenAPI document but their own session's (``session:own``), with their session and with
  their API token -- 403 .../mfa-enrolment-required, nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.auth.models import Role, User
from app.kit import crypto
from fixtures.factories import DEFAULT_PASSWORD, InvitationFactory
from tests.harness import browser
from tests.harness.api import (
    PROBLEM_JSON,
    assert_problem,
    login,
    login_request,
    problem_type,
    shared_part,
)
from tests.harness.authenticator import Authenticator
from tests.harness.plugin import asgi_client
from tests.harness.world import ClinicWorld, World
from tests.security.catalogue import ROUTES, Route
from tests.security.estate import rows_of
from tests.security.surface import census, outside_the_trail, protected_operations, resolve

MFA_REQUIRED = problem_type("mfa-required")
ENROL_FIRST = problem_type("mfa-enrolment-required")
OPERATIONS = protected_operations()
OWN_SESSION = [
    op for op in OPERATIONS if op.spec.get("x-permission", {}).get("action") == "session:own"
]


async def _enrolled(world: World) -> tuple[ClinicWorld, Authenticator, list[str]]:
    """A clinic whose owner has MFA on, and ten recovery codes made through the API."""
    clinic = await world.clinic(roles=())
    authenticator = Authenticator(await world.enrol_mfa(clinic.setup.owner))
    return clinic, authenticator, []


def _refused(response: httpx.Response) -> bool:
    return (
        response.status_code == 401
        and response.headers.get("content-type") == PROBLEM_JSON
        and response.json()["type"] == MFA_REQUIRED
        and "set-cookie" not in response.headers
    )


async def test_a_wrong_password_says_nothing_about_the_second_factor(client, world) -> None:
    enrolled, _, _ = await _enrolled(world)
    plain = await world.clinic(roles=())

    answers = [
        # pragma: allowlist nextline secret - a wrong password, the point of the test
        await login(client, clinic.setup.owner.email, "not the password", totp_code=code)
        for clinic in (enrolled, plain)
        for code in (None, "123456")
    ]

    assert {a.status_code for a in answers} == {401}
    assert len({json.dumps(shared_part(a.json())) for a in answers}) == 1
    assert answers[0].json()["type"] == problem_type("invalid-credentials")


async def test_login_without_or_with_wrong_codes_is_refused_and_writes_nothing(
    client, world, superuser_engine
) -> None:
    clinic, authenticator, _ = await _enrolled(world)
    before = await census(superuser_engine)
    # Made just before each is sent: a code made early drifts into the window as time passes.
    guesses: list[Callable[[], str | None]] = [lambda: None]
    guesses += [lambda c=c: c for c in ("000000", "12345a", "0000000", "not-a-recovery-code")]
    guesses += [lambda: f"{secrets.randbelow(10**6):06d}" for _ in range(40)]
    guesses += [lambda s=s: authenticator.code_at_offset(s) for s in (-3, -2, 2, 3)]

    failures = []
    for guess in guesses:
        code = guess()
        if code in {authenticator.code_at_offset(step) for step in (-1, 0, 1)}:
            continue  # a random guess that happens to be right (3 in a million)
        response = await login(client, clinic.setup.owner.email, totp_code=code)
        if not _refused(response):
            failures.append(f"{code}: {response.status_code} {response.text[:100]}")

    assert not failures, "\n".join(failures)
    # Nothing but the refusals' security events (tests/integration/test_security_trail.py).
    assert outside_the_trail(await census(superuser_engine)) == outside_the_trail(before)


async def test_a_code_within_one_step_of_drift_is_accepted(client, world) -> None:
    for step in (-1, 1):
        clinic, authenticator, _ = await _enrolled(world)
        response = await login(
            client, clinic.setup.owner.email, totp_code=authenticator.code_at_offset(step)
        )
        assert response.status_code == 200, (step, response.text)


async def test_a_code_is_accepted_once(client, world) -> None:
    clinic, authenticator, _ = await _enrolled(world)
    code = authenticator.next_code()

    first = await login(client, clinic.setup.owner.email, totp_code=code)
    replayed = await login(client, clinic.setup.owner.email, totp_code=code)

    assert first.status_code == 200
    assert _refused(replayed)


async def test_an_older_code_is_refused_after_a_newer_one(client, world) -> None:
    clinic, authenticator, _ = await _enrolled(world)
    older, newer = authenticator.code_at_offset(-1), authenticator.code_at_offset(0)
    assert (await login(client, clinic.setup.owner.email, totp_code=newer)).status_code == 200
    assert _refused(await login(client, clinic.setup.owner.email, totp_code=older))


async def test_racing_requests_with_one_code_get_one_session(app, world) -> None:
    clinic, authenticator, _ = await _enrolled(world)
    code = authenticator.next_code()

    async def attempt() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            return await login(http, clinic.setup.owner.email, totp_code=code)

    answers = await asyncio.gather(*(attempt() for _ in range(6)))

    assert sorted(a.status_code for a in answers) == [200] + [401] * 5


async def _recovery_codes(client, world) -> tuple[ClinicWorld, Authenticator, list[str]]:
    clinic = await world.clinic(roles=())
    client.cookies.update(browser.cookies(await world.login(clinic.owner)))
    authenticator = Authenticator((await client.post("/api/v1/auth/mfa/totp")).json()["secret"])
    confirmed = await client.post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": authenticator.next_code()}
    )
    client.cookies.clear()
    return clinic, authenticator, confirmed.json()["recovery_codes"]


async def test_a_recovery_code_is_single_use(client, world) -> None:
    clinic, _, codes = await _recovery_codes(client, world)

    first = await login(client, clinic.setup.owner.email, totp_code=codes[0])
    again = await login(client, clinic.setup.owner.email, totp_code=codes[0])
    other = await login(client, clinic.setup.owner.email, totp_code=codes[1])

    assert first.status_code == 200
    assert _refused(again)
    assert other.status_code == 200


async def test_regenerated_codes_void_every_old_one(client, world) -> None:
    clinic, authenticator, old = await _recovery_codes(client, world)
    client.cookies.update(browser.cookies(await world.login(clinic.owner)))
    renewed = await client.post(
        "/api/v1/auth/mfa/recovery-codes", json={"code": authenticator.next_code()}
    )
    client.cookies.clear()
    assert renewed.status_code == 200

    assert all(
        [_refused(await login(client, clinic.setup.owner.email, totp_code=code)) for code in old]
    )


async def test_turning_mfa_off_needs_a_valid_code(client, world, superuser_engine) -> None:
    clinic, authenticator, _ = await _enrolled(world)
    client.cookies.update(browser.cookies(await world.login(clinic.owner)))
    before = await census(superuser_engine)

    for code in ("000000", "aaaaa-bbbbb-ccccc-ddddd", authenticator.code_at_offset(2)):
        response = await client.post("/api/v1/auth/mfa/totp/disable", json={"code": code})
        assert response.status_code == 422, response.text

    assert outside_the_trail(await census(superuser_engine)) == outside_the_trail(before)
    client.cookies.clear()
    assert _refused(await login(client, clinic.setup.owner.email))


# -- every route that takes an account's password --------------------------------------------
async def _log_in(world: World, user: User) -> dict[str, Any]:
    body: dict[str, Any] = login_request(user.email)["json"]
    return body


async def _sign_up(world: World, user: User) -> dict[str, Any]:
    """An existing user opens another clinic with their own password."""
    return {
        "clinic_name": "Second Practice",
        "owner_name": user.name,
        "email": user.email,
        "password": DEFAULT_PASSWORD,
    }


async def _accept(world: World, user: User) -> dict[str, Any]:
    """An existing user joins another clinic that invited their address."""
    other = await world.clinic(roles=())
    token, token_hash = crypto.new_credential("vti", other.id)
    await world.make(
        other,
        InvitationFactory,
        email=user.email,
        invited_by=other.owner.user.id,
        secret_hash=token_hash,
    )
    return {"token": token, "password": DEFAULT_PASSWORD}


PROVES_AN_ACCOUNT: dict[tuple[str, str], Callable[[World, User], Awaitable[dict[str, Any]]]] = {
    ("POST", "/api/v1/auth/login"): _log_in,
    ("POST", "/api/v1/auth/signup"): _sign_up,
    ("POST", "/api/v1/auth/invitations/accept"): _accept,
}
"""Every route that takes an existing account's password: a valid body with ``user``'s."""
NEW_PASSWORDS: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/password-reset/complete"): "the mailed link proves the account; the"
    " password field only sets the new one",
}
"""Routes whose password field only ever sets a new password, never proves one, and why."""
PROVEN_IN_A_SESSION: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/password"): "the caller is logged in; the current password and, with"
    " MFA on, a code are checked as field errors (422) under the route's own per-user limit:"
    " test_account_lifecycle.py::test_a_user_with_a_second_factor_gives_a_code_to_change_it,"
    " ::test_guessing_the_current_password_is_limited_per_user",
}
"""Routes that prove the password of the account already logged in, and where that is tested."""


def _takes_a_password(route: Route) -> bool:
    if route.body_schema is None:
        return False
    schema = resolve({"$ref": f"#/components/schemas/{route.body_schema}"})
    return any("password" in name for name in schema.get("properties", {}))


PASSWORD_ROUTES = [route for route in ROUTES if _takes_a_password(route)]
# Two free failures, then 1 s of back-off: the third wrong attempt shows that they counted.
BACK_OFF_AT_THREE = {"login_free_failures": 2, "login_lockout_failures": 10}


def test_every_route_that_takes_a_password_is_known() -> None:
    unknown = [
        f"{route.label} takes a password: add it to PROVES_AN_ACCOUNT, or to NEW_PASSWORDS with"
        " the reason no existing account's password is proven there"
        for route in PASSWORD_ROUTES
        if route.key not in {*PROVES_AN_ACCOUNT, *NEW_PASSWORDS, *PROVEN_IN_A_SESSION}
    ]
    assert not unknown, "\n".join(unknown)
    assert set(PROVES_AN_ACCOUNT) <= {route.key for route in PASSWORD_ROUTES}


@pytest.mark.parametrize(
    "route",
    [route for route in PASSWORD_ROUTES if route.key in PROVES_AN_ACCOUNT],
    ids=lambda route: route.label,
)
async def test_every_route_that_takes_an_accounts_password_needs_its_second_factor(
    configured_app, world: World, superuser_engine, route: Route
) -> None:
    """Anything that authenticates an existing account completes its second factor, as log-in
    does (issue 15, defect 8: signing up another clinic, and accepting an invitation, with only
    the password of an account that has MFA on succeeded). A wrong password is the same
    invalid-credentials with a code; without a code or with a wrong one, 401 mfa-required and
    nothing written; each failure spends the account's back-off, so that codes cannot be
    guessed there instead of at log-in; the right code goes through."""
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    authenticator = Authenticator(await world.enrol_mfa(user))
    body = await PROVES_AN_ACCOUNT[route.key](world, user)
    wrong_code = "000000" if authenticator.code_at_offset(0) != "000000" else "111111"
    async with configured_app(**BACK_OFF_AT_THREE) as app, asgi_client(app) as http:

        async def send(**fields: object) -> httpx.Response:
            return await http.request(route.method, route.path, json={**body, **fields})

        before = [outside_the_trail(await census(superuser_engine))]
        before.append(outside_the_trail(await rows_of(superuser_engine, clinic.id)))
        # pragma: allowlist nextline secret - a wrong password, the point of the test
        wrong_password = await send(password="not the password", totp_code=wrong_code)
        without = await send()
        wrong = await send(totp_code=wrong_code)
        backing_off = await send(totp_code=authenticator.next_code())
        after = [outside_the_trail(await census(superuser_engine))]
        after.append(outside_the_trail(await rows_of(superuser_engine, clinic.id)))
        await asyncio.sleep(1.1)
        right = await send(totp_code=authenticator.next_code())

    for refused in (without, wrong):
        assert _refused(refused), refused.text
    assert_problem(wrong_password, 401, "invalid-credentials")
    assert_problem(backing_off, 429, "login-throttled")
    assert after == before
    assert right.is_success, right.text


# -- a clinic that requires MFA ---------------------------------------------------------------
async def _requiring(client, world: World) -> ClinicWorld:
    clinic = await world.clinic(roles=(Role.vet, Role.technician))
    on = await client.patch(
        "/api/v1/clinics/current",
        json={"require_mfa": True},
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )
    assert on.status_code == 200
    return clinic


def test_own_session_routes_are_few_and_read_from_the_document() -> None:
    """What a member who must still enrol may do: their own session and account, nothing of
    the clinic's. A new one is a decision, made here by name."""
    assert {op.label for op in OWN_SESSION} == {
        "GET /api/v1/auth/me",
        "POST /api/v1/auth/logout",
        "POST /api/v1/auth/logout-everywhere",
        "POST /api/v1/auth/switch",
        "POST /api/v1/auth/mfa/totp",
        "POST /api/v1/auth/mfa/totp/confirm",
        "POST /api/v1/auth/mfa/totp/disable",
        "POST /api/v1/auth/mfa/recovery-codes",
        "POST /api/v1/auth/verify-email",
        "POST /api/v1/auth/verify-email/resend",
        "POST /api/v1/auth/password",
    }


@pytest.mark.parametrize("credential", ["session", "api token"])
async def test_an_unenrolled_member_is_refused_everywhere_else(
    client, world, superuser_engine, credential: str
) -> None:
    clinic = await _requiring(client, world)
    vet = clinic.actors[Role.vet]
    if credential == "session":
        cookies, headers = browser.cookies(await world.login(vet)), {}
        # Their own session's routes stay open to a session, and only those.
        operations = [op for op in OPERATIONS if op not in OWN_SESSION]
    else:
        cookies, headers = {}, vet.headers
        operations = OPERATIONS
    before = await census(superuser_engine)

    failures = []
    for op in operations:
        client.cookies.clear()
        client.cookies.update(cookies)
        response = await client.request(
            op.method.upper(), op.url(), headers=headers, json={} if op.has_body else None
        )
        if not (
            response.status_code == 403
            and response.headers.get("content-type") == PROBLEM_JSON
            and response.json()["type"] == ENROL_FIRST
        ):
            failures.append(f"{op.label}: {response.status_code} {response.text[:200]}")
    client.cookies.clear()

    assert not failures, "\n".join(failures)
    assert await census(superuser_engine) == before
    # Proof that the refusals are the requirement: an enrolled colleague goes through.
    await world.enrol_mfa(clinic.actors[Role.technician].user)
    pets = await client.get("/api/v1/pets", headers=clinic.actors[Role.technician].headers)
    assert pets.status_code == 200
