"""The account lifecycle end to end over HTTP, with the real mail relay: each link is read from
the mail the job sent and used as its recipient would (ADR 0013).

Address verification at sign-up and invitation acceptance, and what an unverified owner may
not do; password reset (single use, expiry, the same answer for any address, limits, every
credential ended, the lock lifted); password change; breached passwords; taking back an
address someone else registered; argon2id parameters from settings; the security log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

import httpx
import pytest
from argon2 import extract_parameters
from sqlalchemy import text, update

from app.auth.models import Role, User
from app.auth.service import SESSION_COOKIE
from app.settings import Settings
from fixtures.clinics import add_member
from fixtures.factories import DEFAULT_PASSWORD, TEST_HASHING
from tests.harness import canary
from tests.harness.api import (
    SIGNUP_PASSWORD,
    assert_problem,
    login,
    signup,
    signup_body,
)
from tests.harness.authenticator import Authenticator
from tests.harness.clock import Clock
from tests.harness.mail import (
    INVITATION,
    PASSWORD_RESET,
    VERIFICATION,
    mailed_token,
    mailed_tokens,
    mails_to,
)
from tests.harness.plugin import asgi_client
from tests.harness.scrapes import scrape, value
from tests.harness.world import World

AUTH = "/api/v1/auth"
VERIFY = f"{AUTH}/verify-email"
RESEND = f"{AUTH}/verify-email/resend"
RESET = f"{AUTH}/password-reset"
RESET_COMPLETE = f"{AUTH}/password-reset/complete"
CHANGE = f"{AUTH}/password"
SCRAPER = canary.METRICS_TOKEN
INVITATIONS = "/api/v1/staff/invitations"
CHECKOUT = "/api/v1/billing/checkout"
# pragma: allowlist nextline secret - made-up passphrases of the tests' people
NEW_PASSWORD = "violet kettles hum at dawn"
# pragma: allowlist nextline secret
OTHER_PASSWORD = "seven quiet otters in november"
BREACHED = "Password1234"  # in every breached-password list


async def users_with(engine, email: str) -> list[dict]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id, email_verified_at, password_hash FROM users WHERE lower(email) = :e"),
            {"e": email.lower()},
        )
        return [dict(row) for row in rows.mappings()]


async def count(engine, table: str) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(text(f"SELECT count(*) FROM {table}")))


async def signed_up(client: httpx.AsyncClient, **fields: object) -> dict:
    response = await signup(client, **fields)
    assert response.status_code == 201, response.text
    body: dict = response.json()
    return body


async def logged_in(
    client: httpx.AsyncClient, email: str, password: str, **options: object
) -> httpx.Response:
    client.cookies.clear()
    response = await login(client, email, password, **options)
    assert response.status_code == 200, response.text
    return response


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(client: httpx.AsyncClient) -> str:
    """An API token made with the client's login session."""
    response = await client.post(f"{AUTH}/tokens", json={"name": "script"})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


async def still_works(app, cookie: str | None = None, token: str | None = None) -> bool:
    """Whether a session cookie or an API token still authenticates (a fresh client)."""
    async with asgi_client(app) as other:
        if cookie is not None:
            other.cookies.set(SESSION_COOKIE, cookie)
        response = await other.get(f"{AUTH}/me", headers=bearer(token) if token else None)
    return response.status_code == 200


# -- verifying the address ------------------------------------------------------------------------
async def test_a_new_owner_verifies_their_address_before_inviting_or_paying(
    client, settings, mailbox, superuser_engine, stripe, security_events
):
    body = signup_body()
    email = body["email"]
    created = await signed_up(client, body=body)
    assert created["user"]["email"] == email

    me = await logged_in(client, email, SIGNUP_PASSWORD)
    assert me.json()["user"]["email_verified_at"] is None
    # The trial works; bringing others in and paying wait for the address.
    assert (await client.get("/api/v1/customers")).status_code == 200
    invited = await client.post(INVITATIONS, json={"email": "vet@example.org", "role": "vet"})
    paying = await client.post(CHECKOUT, json={"plan": "starter"})
    assert_problem(invited, 403, "email-unverified")
    assert_problem(paying, 403, "email-unverified")
    assert await count(superuser_engine, "invitations") == 0
    assert stripe.requests == []

    token = await mailed_token(settings, mailbox, email, VERIFICATION)
    [mail] = mails_to(mailbox, email)
    assert mail["Subject"] == "Verify your address for Vetify"
    verified = await client.post(VERIFY, json={"token": token})

    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified_at"] is not None
    assert [
        (fields["outcome"], fields.get("user_id"))
        for event, fields in security_events
        if event == "email_verified"
    ] == [("by_link", created["user"]["id"])]
    assert (await client.get(f"{AUTH}/me")).json()["user"]["email_verified_at"] is not None
    assert_problem(await client.post(VERIFY, json={"token": token}), 404, "not-found")
    assert (
        await client.post(INVITATIONS, json={"email": "vet@example.org", "role": "vet"})
    ).status_code == 201
    assert (await mailed_tokens(settings, mailbox, "vet@example.org", INVITATION)) != []
    assert_problem(await client.post(RESEND), 409, "conflict")


async def test_the_link_verifies_only_with_its_own_accounts_log_in(
    app, client, settings, mailbox, world: World, superuser_engine
):
    body = signup_body()
    await signed_up(client, body=body)
    token = await mailed_token(settings, mailbox, body["email"], VERIFICATION)
    clinic = await world.clinic(roles=())

    # Someone else's login, or none at all, cannot spend it.
    stranger = await client.post(VERIFY, json={"token": token}, headers=clinic.owner.headers)
    async with asgi_client(app) as anonymous:
        nobody = await anonymous.post(VERIFY, json={"token": token})

    assert_problem(stranger, 404, "not-found")
    assert_problem(nobody, 401, "unauthenticated")
    [user] = await users_with(superuser_engine, body["email"])
    assert user["email_verified_at"] is None
    await logged_in(client, body["email"], SIGNUP_PASSWORD)
    assert (await client.post(VERIFY, json={"token": token})).status_code == 200


async def test_a_new_link_can_be_asked_for_and_each_works_once(client, settings, mailbox):
    body = signup_body()
    await signed_up(client, body=body)
    await logged_in(client, body["email"], SIGNUP_PASSWORD)

    resent = await client.post(RESEND)

    assert resent.status_code == 202, resent.text
    first, second = await mailed_tokens(settings, mailbox, body["email"], VERIFICATION)
    assert first != second
    assert (await client.post(VERIFY, json={"token": second})).status_code == 200
    # Verified once is verified: the other link still works once, and changes nothing.
    again = await client.post(VERIFY, json={"token": first})
    assert again.status_code == 200
    assert_problem(await client.post(VERIFY, json={"token": first}), 404, "not-found")
    done = assert_problem(await client.post(RESEND), 409, "conflict")
    assert done["detail"] == "Your address is already verified."


async def test_resending_is_limited_per_user(configured_app, settings, mailbox):
    async with (
        configured_app(rate_limit_scale=1, rate_limit_verification_mail="2/hour") as app,
        asgi_client(app) as client,
    ):
        body = signup_body()
        await signed_up(client, body=body)
        await logged_in(client, body["email"], SIGNUP_PASSWORD)
        answers = [(await client.post(RESEND)).status_code for _ in range(3)]

    assert answers == [202, 202, 429]
    assert len(await mailed_tokens(settings, mailbox, body["email"], VERIFICATION)) == 3


async def test_accepting_an_invitation_makes_an_unverified_account_and_mails_a_link(
    client, settings, mailbox, world: World, superuser_engine
):
    clinic = await world.clinic(roles=())
    email = f"invitee-{uuid.uuid4().hex[:8]}@example.org"
    invited = await client.post(
        INVITATIONS, json={"email": email, "role": "vet"}, headers=clinic.owner.headers
    )
    assert invited.status_code == 201
    invitation = await mailed_token(settings, mailbox, email, INVITATION)

    joined = await client.post(
        f"{AUTH}/invitations/accept",
        json={"token": invitation, "name": "Ines Vet", "password": NEW_PASSWORD},
    )

    assert joined.status_code == 201, joined.text
    assert joined.json()["user"]["email_verified_at"] is None
    token = await mailed_token(settings, mailbox, email, VERIFICATION)
    await logged_in(client, email, NEW_PASSWORD)
    assert (await client.post(VERIFY, json={"token": token})).status_code == 200
    [user] = await users_with(superuser_engine, email)
    assert user["email_verified_at"] is not None


# -- resetting a forgotten password ---------------------------------------------------------------
async def test_a_reset_request_is_answered_alike_for_any_address(
    client, settings, mailbox, world: World
):
    clinic = await world.clinic(roles=())
    known = clinic.setup.owner.email
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.org"

    answers = [await client.post(RESET, json={"email": email}) for email in (known, unknown)]

    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json() == answers[1].json()
    assert answers[0].content == answers[1].content
    assert len(await mailed_tokens(settings, mailbox, known, PASSWORD_RESET)) == 1
    assert mails_to(mailbox, unknown) == []


async def test_a_reset_sets_the_password_once_and_ends_every_credential_everywhere(
    app, client, settings, mailbox, world: World, superuser_engine
):
    first, second = await world.clinic(roles=()), await world.clinic(roles=())
    user = first.setup.owner
    async with world.session(second.id) as session:
        await add_member(session, user, Role.vet)
    in_second = await world.actor(second.id, user)
    session_cookie = (
        await logged_in(client, user.email, DEFAULT_PASSWORD, clinic_id=str(first.id))
    ).cookies[SESSION_COOKIE]
    token_in_first = first.owner.token
    client.cookies.clear()

    requested = await client.post(RESET, json={"email": user.email.upper()})
    assert requested.status_code == 202
    token = await mailed_token(settings, mailbox, user.email, PASSWORD_RESET)
    assert token.startswith("vtr_")
    done = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

    assert done.status_code == 204, done.text
    assert_problem(
        await login(client, user.email, DEFAULT_PASSWORD, clinic_id=str(first.id)),
        401,
        "invalid-credentials",
    )
    await logged_in(client, user.email, NEW_PASSWORD, clinic_id=str(first.id))
    assert not await still_works(app, cookie=session_cookie)
    assert not await still_works(app, token=token_in_first)
    assert not await still_works(app, token=in_second.token)
    # Single use: the link cannot set the password again.
    again = await client.post(RESET_COMPLETE, json={"token": token, "password": OTHER_PASSWORD})
    assert_problem(again, 404, "not-found")
    await logged_in(client, user.email, NEW_PASSWORD, clinic_id=str(first.id))


@pytest.mark.mutation_targets("app/auth/lifecycle.py::_void_reset_links")
async def test_setting_a_password_voids_every_reset_link_mailed_before(
    client, settings, mailbox, world: World
):
    clinic, elsewhere = await world.clinic(roles=()), await world.clinic(roles=())
    email, theirs = clinic.setup.owner.email, elsewhere.setup.owner.email
    for address in (email, email, theirs):
        assert (await client.post(RESET, json={"email": address})).status_code == 202
    older, newer = await mailed_tokens(settings, mailbox, email, PASSWORD_RESET)
    (their_link,) = await mailed_tokens(settings, mailbox, theirs, PASSWORD_RESET)

    assert (
        await client.post(RESET_COMPLETE, json={"token": newer, "password": NEW_PASSWORD})
    ).status_code == 204
    stale = await client.post(RESET_COMPLETE, json={"token": older, "password": OTHER_PASSWORD})

    assert_problem(stale, 404, "not-found")
    await logged_in(client, email, NEW_PASSWORD)
    # Another user's link is theirs to use.
    assert (
        await client.post(RESET_COMPLETE, json={"token": their_link, "password": NEW_PASSWORD})
    ).status_code == 204


@pytest.mark.mutation_targets("app/auth/lifecycle.py::_void_reset_links")
async def test_a_password_change_leaves_the_address_verification_link_working(
    client, settings, mailbox
):
    body = signup_body()
    await signed_up(client, body=body)
    await logged_in(client, body["email"], SIGNUP_PASSWORD)
    (link,) = await mailed_tokens(settings, mailbox, body["email"], VERIFICATION)  # mailed first
    changed = await client.post(
        CHANGE, json={"current_password": SIGNUP_PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text
    assert (await client.post(VERIFY, json={"token": link})).status_code == 200


async def test_a_reset_link_expires(configured_app, settings, mailbox, world: World):
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    async with (
        configured_app(password_reset_valid_seconds=1) as app,
        asgi_client(app) as client,
    ):
        assert (await client.post(RESET, json={"email": email})).status_code == 202
        # The link's life starts when the job mails it, under the configured app's settings.
        token = await mailed_token(app.state.settings, mailbox, email, PASSWORD_RESET)
        await asyncio.sleep(1.2)
        late = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

        assert_problem(late, 404, "not-found")
        await logged_in(client, email, DEFAULT_PASSWORD)


@pytest.mark.mutation_targets("app/auth/lifecycle.py::new_link")
async def test_a_verification_link_lives_its_hours_not_a_reset_links_seconds(
    configured_app, mailbox, clock: Clock
):
    async with (
        configured_app(password_reset_valid_seconds=1) as app,
        asgi_client(app) as client,
    ):
        body = signup_body()
        await signed_up(client, body=body)
        await logged_in(client, body["email"], SIGNUP_PASSWORD)
        (link,) = await mailed_tokens(app.state.settings, mailbox, body["email"], VERIFICATION)
        clock.advance(dt.timedelta(seconds=1.2))  # past a reset link's life
        assert (await client.post(VERIFY, json={"token": link})).status_code == 200


@pytest.mark.mutation_targets("app/auth/lifecycle.py::_use_link")
async def test_a_link_is_refused_once_its_account_is_disabled_or_its_address_changed(
    client, settings, mailbox, world: World
):
    disabled, moved = await world.clinic(roles=()), await world.clinic(roles=())
    for clinic in (disabled, moved):
        email = clinic.setup.owner.email
        assert (await client.post(RESET, json={"email": email})).status_code == 202
    links = [
        await mailed_token(settings, mailbox, clinic.setup.owner.email, PASSWORD_RESET)
        for clinic in (disabled, moved)
    ]
    async with world.session() as session:
        await session.execute(
            update(User).where(User.id == disabled.setup.owner.id).values(active=False)
        )
        await session.execute(
            update(User)
            .where(User.id == moved.setup.owner.id)
            .values(email=f"moved-{uuid.uuid4().hex[:8]}@example.org")
        )
    for link in links:
        refused = await client.post(RESET_COMPLETE, json={"token": link, "password": NEW_PASSWORD})
        body = assert_problem(refused, 404, "not-found")
        assert body["detail"] == "The link is not valid, has expired or was already used."


@pytest.mark.mutation_targets("app/auth/lifecycle.py::_use_link")
async def test_a_link_ends_at_its_expiry_to_the_microsecond(
    client, settings, mailbox, world: World, clock: Clock
):
    """Two links mailed at one frozen instant: one used a microsecond before its expiry
    works, the other used at it does not."""
    first, second = await world.clinic(roles=()), await world.clinic(roles=())
    emails = [first.setup.owner.email, second.setup.owner.email]
    for email in emails:
        assert (await client.post(RESET, json={"email": email})).status_code == 202
    early, late = [await mailed_token(settings, mailbox, e, PASSWORD_RESET) for e in emails]
    clock.advance(dt.timedelta(seconds=settings.password_reset_valid_seconds, microseconds=-1))
    last_moment = await client.post(RESET_COMPLETE, json={"token": early, "password": NEW_PASSWORD})
    assert last_moment.status_code == 204, last_moment.text
    clock.advance(dt.timedelta(microseconds=1))
    at_expiry = await client.post(RESET_COMPLETE, json={"token": late, "password": NEW_PASSWORD})
    assert_problem(at_expiry, 404, "not-found")


async def test_a_reset_lifts_the_log_in_lock(configured_app, settings, mailbox, world: World):
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    async with (
        configured_app(login_free_failures=1, login_lockout_failures=2) as app,
        asgi_client(app) as client,
    ):
        for _ in range(2):
            await login(client, email, "not the password at all")
        assert_problem(await login(client, email, DEFAULT_PASSWORD), 429, "login-throttled")
        await client.post(RESET, json={"email": email})
        token = await mailed_token(settings, mailbox, email, PASSWORD_RESET)

        done = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

        assert done.status_code == 204
        await logged_in(client, email, NEW_PASSWORD)


@pytest.mark.mutation_targets("app/auth/lifecycle.py::request_password_reset")
async def test_reset_mails_are_limited_per_address_and_requests_per_ip(
    configured_app, settings, mailbox, world: World
):
    clinic, elsewhere = await world.clinic(roles=()), await world.clinic(roles=())
    email = clinic.setup.owner.email
    # pragma: allowlist nextline secret - rates, not secrets
    limits = {"rate_limit_password_reset_address": "2/hour", "rate_limit_password_reset": "4/hour"}
    async with configured_app(rate_limit_scale=1, metrics_token=SCRAPER, **limits) as app:
        async with asgi_client(app, client_ip="203.0.113.7") as client:
            before = await scrape(client, SCRAPER)
            answers = [await client.post(RESET, json={"email": email}) for _ in range(3)]
            # Beyond the address's limit the answer is the same; only the mail stops.
            assert [a.status_code for a in answers] == [202, 202, 202]
            assert len({a.content for a in answers}) == 1
            assert len(await mailed_tokens(settings, mailbox, email, PASSWORD_RESET)) == 2
            other = await client.post(RESET, json={"email": elsewhere.setup.owner.email})
            assert other.status_code == 202
            # Another address has a limit of its own: its mail goes out.
            assert await mailed_tokens(
                settings, mailbox, elsewhere.setup.owner.email, PASSWORD_RESET
            )
            assert_problem(
                await client.post(RESET, json={"email": "more@example.org"}), 429, "rate-limited"
            )
        async with asgi_client(app, client_ip="203.0.113.8") as elsewhere:
            assert (await elsewhere.post(RESET, json={"email": email})).status_code == 202
            after = await scrape(elsewhere, SCRAPER)
    assert len(await mailed_tokens(settings, mailbox, email, PASSWORD_RESET)) == 2

    # Each refusal counted by its policy: the address's twice (silently), the IP's once (429).
    def refused(policy: str) -> float:
        name = "vetify_rate_limit_rejections_total"
        return value(after, name, policy=policy) - value(before, name, policy=policy)

    assert (refused("password-reset-address"), refused("password-reset")) == (2, 1)


@pytest.mark.parametrize(
    "token", ["vtr_" + "A" * 43, "vtv_" + "A" * 43], ids=["made up", "wrong kind"]
)
async def test_a_made_up_reset_token_is_404(client, token):
    response = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

    assert_problem(response, 404, "not-found")


async def test_a_verification_link_does_not_reset_a_password(client, settings, mailbox):
    body = signup_body()
    await signed_up(client, body=body)
    token = await mailed_token(settings, mailbox, body["email"], VERIFICATION)

    response = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

    assert_problem(response, 404, "not-found")
    await logged_in(client, body["email"], SIGNUP_PASSWORD)


# -- changing the password ------------------------------------------------------------------------
@pytest.mark.mutation_targets("app/auth/lifecycle.py::change_password")
async def test_a_password_change_voids_the_reset_links_mailed_before(
    client, settings, mailbox, world: World
):
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    assert (await client.post(RESET, json={"email": email})).status_code == 202
    link = await mailed_token(settings, mailbox, email, PASSWORD_RESET)
    await logged_in(client, email, DEFAULT_PASSWORD)
    changed = await client.post(
        CHANGE, json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200, changed.text
    late = await client.post(RESET_COMPLETE, json={"token": link, "password": OTHER_PASSWORD})
    assert_problem(late, 404, "not-found")


async def test_a_password_change_ends_every_other_credential_and_renews_the_session(
    app, client, world: World
):
    first, second = await world.clinic(roles=()), await world.clinic(roles=())
    user = first.setup.owner
    async with world.session(second.id) as session:
        await add_member(session, user, Role.vet)
    in_second = await world.actor(second.id, user)
    elsewhere = await world.login(first.owner)
    old_cookie = (
        await logged_in(client, user.email, DEFAULT_PASSWORD, clinic_id=str(first.id))
    ).cookies[SESSION_COOKIE]
    token = await new_token(client)

    changed = await client.post(
        CHANGE, json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["clinic"]["id"] == str(first.id)
    new_cookie = changed.cookies[SESSION_COOKIE]
    assert new_cookie != old_cookie
    assert await still_works(app, cookie=new_cookie)
    for cookie in (old_cookie, elsewhere):
        assert not await still_works(app, cookie=cookie)
    for gone in (token, first.owner.token, in_second.token):
        assert not await still_works(app, token=gone)
    assert_problem(
        await login(client, user.email, DEFAULT_PASSWORD, clinic_id=str(first.id)),
        401,
        "invalid-credentials",
    )
    await logged_in(client, user.email, NEW_PASSWORD, clinic_id=str(first.id))


@pytest.mark.mutation_targets(
    "app/auth/lifecycle.py::change_password", "app/auth/lifecycle.py::_refused"
)
async def test_a_wrong_current_password_or_an_api_token_changes_nothing(
    app, client, world: World, superuser_engine
):
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    cookie = (await logged_in(client, user.email, DEFAULT_PASSWORD)).cookies[SESSION_COOKIE]
    [before] = await users_with(superuser_engine, user.email)

    wrong = await client.post(
        CHANGE, json={"current_password": OTHER_PASSWORD, "new_password": NEW_PASSWORD}
    )
    by_token = await client.post(
        CHANGE,
        json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD},
        headers=clinic.owner.headers,
    )

    body = assert_problem(wrong, 422, "validation-error")
    assert body["detail"] == "The current password is wrong."
    assert body["errors"] == [
        {"loc": ["body", "current_password"], "msg": body["detail"], "type": "refused"}
    ]
    refused = assert_problem(by_token, 403, "forbidden")
    assert refused["detail"] == "Change your password from a login session."
    assert await users_with(superuser_engine, user.email) == [before]
    assert await still_works(app, cookie=cookie)
    assert await still_works(app, token=clinic.owner.token)


async def test_guessing_the_current_password_is_limited_per_user(configured_app, world: World):
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    # pragma: allowlist nextline secret - a rate, not a secret
    change_limit = {"rate_limit_password_change": "2/hour"}
    async with (
        configured_app(rate_limit_scale=1, **change_limit) as app,
        asgi_client(app) as client,
    ):
        await logged_in(client, user.email, DEFAULT_PASSWORD)
        guesses = [
            await client.post(
                CHANGE, json={"current_password": f"guess number {n}", "new_password": NEW_PASSWORD}
            )
            for n in range(2)
        ]
        right = await client.post(
            CHANGE, json={"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}
        )

    assert [g.status_code for g in guesses] == [422, 422]
    assert_problem(right, 429, "rate-limited")


@pytest.mark.mutation_targets("app/auth/lifecycle.py::change_password")
async def test_a_user_with_a_second_factor_gives_a_code_to_change_it(client, world: World):
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    authenticator = Authenticator(await world.enrol_mfa(user))
    await logged_in_with_code(client, user.email, authenticator)
    change = {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD}

    without = await client.post(CHANGE, json=change)
    wrong = await client.post(CHANGE, json={**change, "totp_code": "000000"})
    right = await client.post(CHANGE, json={**change, "totp_code": authenticator.next_code()})

    said = []
    for refused in (without, wrong):
        body = assert_problem(refused, 422, "validation-error")
        assert body["errors"] == [
            {"loc": ["body", "totp_code"], "msg": body["detail"], "type": "refused"}
        ]
        said.append(body["detail"])
    assert said == [
        "Send totp_code: a code from your authenticator.",
        "The code is not valid or was already used.",
    ]
    assert right.status_code == 200, right.text
    client.cookies.clear()
    again = await login(client, user.email, NEW_PASSWORD, totp_code=authenticator.next_code())
    assert again.status_code == 200


async def logged_in_with_code(client, email: str, authenticator: Authenticator) -> None:
    client.cookies.clear()
    response = await login(client, email, DEFAULT_PASSWORD, totp_code=authenticator.next_code())
    assert response.status_code == 200, response.text


# -- breached passwords ---------------------------------------------------------------------------
async def test_a_breached_password_is_refused_wherever_one_is_set(
    client, settings, mailbox, world: World, superuser_engine
):
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    users = await count(superuser_engine, "users")

    at_signup = await signup(client, password=BREACHED)
    await client.post(RESET, json={"email": user.email})
    token = await mailed_token(settings, mailbox, user.email, PASSWORD_RESET)
    at_reset = await client.post(RESET_COMPLETE, json={"token": token, "password": BREACHED})
    await logged_in(client, user.email, DEFAULT_PASSWORD)
    at_change = await client.post(
        CHANGE, json={"current_password": DEFAULT_PASSWORD, "new_password": BREACHED.lower()}
    )
    email = f"joiner-{uuid.uuid4().hex[:8]}@example.org"
    await client.post(INVITATIONS, json={"email": email, "role": "vet"})
    invitation = await mailed_token(settings, mailbox, email, INVITATION)
    at_joining = await client.post(
        f"{AUTH}/invitations/accept",
        json={"token": invitation, "name": "New Joiner", "password": BREACHED},
    )

    for response, field in [
        (at_signup, "password"),
        (at_reset, "password"),
        (at_change, "new_password"),
        (at_joining, "password"),
    ]:
        body = assert_problem(response, 422, "validation-error")
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [
            (["body", field], "breached_password")
        ]
        assert BREACHED.lower() not in response.text.lower()
    assert await count(superuser_engine, "users") == users
    # Refused input spent nothing: the same links still work with a good password.
    assert (
        await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})
    ).status_code == 204
    joined = await client.post(
        f"{AUTH}/invitations/accept",
        json={"token": invitation, "name": "New Joiner", "password": OTHER_PASSWORD},
    )
    assert joined.status_code == 201


# -- an address someone else registered -----------------------------------------------------------
async def test_the_owner_of_an_address_takes_it_back_from_who_registered_it(
    app, client, settings, mailbox, superuser_engine
):
    email = f"victim-{uuid.uuid4().hex[:8]}@example.org"
    # pragma: allowlist nextline secret - the squatter's made-up passphrase
    squatters = "squatter picked this passphrase"
    async with asgi_client(app, client_ip="198.51.100.66") as squatter:
        await signed_up(squatter, email=email, password=squatters)
        await logged_in(squatter, email, squatters)
        squatter_cookie = squatter.cookies[SESSION_COOKIE]
        squatter_token = await new_token(squatter)
        started = await squatter.post(f"{AUTH}/mfa/totp")
        authenticator = Authenticator(started.json()["secret"])
        confirmed = await squatter.post(
            f"{AUTH}/mfa/totp/confirm", json={"code": authenticator.next_code()}
        )
        assert confirmed.status_code == 200
        squatter_cookie = confirmed.cookies[SESSION_COOKIE]
        made_up = await squatter.post(VERIFY, json={"token": "vtv_" + "B" * 43})
        assert_problem(made_up, 404, "not-found")
    # The real owner cannot sign up over an account they do not hold the password of ...
    assert_problem(await signup(client, email=email), 401, "invalid-credentials")
    # ... and the verification mail the squatter caused is in their mailbox, not the squatter's.
    assert await mailed_tokens(settings, mailbox, email, VERIFICATION) != []

    await client.post(RESET, json={"email": email})
    token = await mailed_token(settings, mailbox, email, PASSWORD_RESET)
    done = await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})

    assert done.status_code == 204
    assert not await still_works(app, cookie=squatter_cookie)
    assert not await still_works(app, token=squatter_token)
    assert_problem(await login(client, email, squatters), 401, "invalid-credentials")
    # The squatter's authenticator is gone with them: the password alone logs in, and a second
    # factor starts from nothing (no pending secret left to confirm).
    owner = await logged_in(client, email, NEW_PASSWORD)
    pending = await client.post(f"{AUTH}/mfa/totp/confirm", json={"code": "123456"})
    assert assert_problem(pending, 409, "conflict")["detail"] == (
        "Start enrolment first (POST /api/v1/auth/mfa/totp)."
    )
    assert owner.json()["user"]["email_verified_at"] is not None
    [user] = await users_with(superuser_engine, email)
    assert user["email_verified_at"] is not None
    invited = await client.post(INVITATIONS, json={"email": "vet@example.org", "role": "vet"})
    assert invited.status_code == 201


async def test_a_verified_accounts_second_factor_survives_a_reset(
    client, settings, mailbox, world: World
):
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    authenticator = Authenticator(await world.enrol_mfa(user))
    await client.post(RESET, json={"email": user.email})
    token = await mailed_token(settings, mailbox, user.email, PASSWORD_RESET)

    assert (
        await client.post(RESET_COMPLETE, json={"token": token, "password": NEW_PASSWORD})
    ).status_code == 204

    assert_problem(await login(client, user.email, NEW_PASSWORD), 401, "mfa-required")
    ok = await login(client, user.email, NEW_PASSWORD, totp_code=authenticator.next_code())
    assert ok.status_code == 200


# -- argon2id parameters ---------------------------------------------------------------------------
HASHING_SETTINGS = (
    "password_hash_time_cost",
    "password_hash_memory_kib",
    "password_hash_parallelism",
)


async def test_a_hash_made_with_other_parameters_is_replaced_at_log_in(
    configured_app, world: World, superuser_engine
):
    """The stages' apps hash cheaply (fixtures.factories.TEST_HASHING, as the users' stored
    hashes are); production hashes with the settings' defaults, RFC 9106's low-memory argon2id,
    and a log-in there replaces a cheaper hash with one of those."""
    production = {name: Settings.model_fields[name].default for name in HASHING_SETTINGS}
    assert production == {
        "password_hash_time_cost": 3,
        "password_hash_memory_kib": 64 * 1024,
        "password_hash_parallelism": 4,
    }
    clinic = await world.clinic(roles=())
    user = clinic.setup.owner
    [before] = await users_with(superuser_engine, user.email)
    assert extract_parameters(before["password_hash"]).time_cost == TEST_HASHING["time_cost"]

    async with configured_app(**production) as app, asgi_client(app) as client:
        await logged_in(client, user.email, DEFAULT_PASSWORD)
        [after] = await users_with(superuser_engine, user.email)
        stored = extract_parameters(after["password_hash"])
        assert (stored.time_cost, stored.memory_cost, stored.parallelism) == (3, 64 * 1024, 4)
        await logged_in(client, user.email, DEFAULT_PASSWORD)


# -- the security log ------------------------------------------------------------------------------
@pytest.mark.mutation_targets("app/auth/lifecycle.py::reset_password")
async def test_a_reset_by_the_mailbox_verifies_an_unverified_address_and_says_so(
    client, settings, mailbox, security_events
):
    body = signup_body()
    created = await signed_up(client, body=body)
    await client.post(RESET, json={"email": body["email"]})
    reset = await mailed_token(settings, mailbox, body["email"], PASSWORD_RESET)
    security_events.clear()

    done = await client.post(RESET_COMPLETE, json={"token": reset, "password": OTHER_PASSWORD})

    assert done.status_code == 204, done.text
    user_id = created["user"]["id"]
    assert [
        (str(event), fields["outcome"], fields.get("user_id")) for event, fields in security_events
    ] == [("email_verified", "by_reset", user_id), ("password_reset", "succeeded", user_id)]
    me = await logged_in(client, body["email"], OTHER_PASSWORD)
    assert me.json()["user"]["email_verified_at"] is not None


async def test_every_lifecycle_event_is_in_the_security_log(
    client, settings, mailbox, caplog, security_events, world: World
):
    body = signup_body()
    with caplog.at_level(logging.INFO, logger="vetify.security"):
        created = await signed_up(client, body=body)
        await logged_in(client, body["email"], SIGNUP_PASSWORD)
        token = await mailed_token(settings, mailbox, body["email"], VERIFICATION)
        await client.post(VERIFY, json={"token": token})
        await client.post(
            CHANGE, json={"current_password": SIGNUP_PASSWORD, "new_password": NEW_PASSWORD}
        )
        await client.post(RESET, json={"email": body["email"]})
        reset = await mailed_token(settings, mailbox, body["email"], PASSWORD_RESET)
        await client.post(RESET_COMPLETE, json={"token": reset, "password": OTHER_PASSWORD})
        await client.post(RESET, json={"email": f"nobody-{body['email']}"})

    user_id = created["user"]["id"]
    said = [
        (str(event), fields["outcome"], fields.get("user_id")) for event, fields in security_events
    ]
    assert said == [
        ("email_verification_mailed", "queued", user_id),
        ("login_succeeded", "succeeded", user_id),
        ("email_verified", "by_link", user_id),
        ("password_changed", "succeeded", user_id),
        ("password_reset_requested", "mailed", user_id),
        ("password_reset", "succeeded", user_id),
        ("password_reset_requested", "no_active_account", None),
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "vetify.security"]
    assert len(logged) == len(said)
    assert not any(body["email"] in line or token in line for line in logged)
    assert body["email"] not in repr(security_events)
