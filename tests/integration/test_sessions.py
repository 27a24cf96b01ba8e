"""Login sessions over HTTP: expiry, privilege changes, and logging out everywhere."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.auth import service
from app.auth.models import CredentialKind, Role
from app.auth.service import SESSION_COOKIE
from app.kit import crypto, csrf
from fixtures.clinics import add_member
from fixtures.factories import CredentialFactory
from tests.harness import browser
from tests.harness.api import assert_problem, login
from tests.harness.plugin import asgi_client


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


async def test_a_session_ends_twelve_hours_after_login_however_busy(client, world) -> None:
    clinic = await world.clinic(roles=())
    logged_in = await login(client, clinic.setup.owner.email)
    expires = dt.datetime.fromisoformat(logged_in.json()["expires_at"])
    assert abs(expires - dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)) < dt.timedelta(minutes=1)
    # Past its absolute expiry, a session just used (not idle) is refused.
    secret, secret_hash = crypto.new_credential(service.SESSION_PREFIX, clinic.id)
    now = dt.datetime.now(dt.UTC)
    await world.make(
        clinic,
        CredentialFactory,
        user_id=clinic.setup.owner.id,
        kind=CredentialKind.session,
        secret_hash=secret_hash,
        last_used_at=now,
        expires_at=now - dt.timedelta(seconds=1),
    )
    client.cookies.clear()

    expired = await client.get("/api/v1/auth/me", headers=cookie(secret))

    assert expired.status_code == 401


async def test_a_log_in_retires_the_session_it_came_with_and_ignores_a_cookie_that_is_none(
    client, world, superuser_engine
) -> None:
    """A browser that logs in again ends its old session (no fixation); a cookie that is no
    session at all (garbage, another credential's shape) changes nothing and the log-in works."""
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    old = await world.login(clinic.owner)

    async def sessions_alive() -> int:
        async with superuser_engine.connect() as connection:
            return await connection.scalar(
                text(
                    "SELECT count(*) FROM credentials WHERE kind = 'session'"
                    " AND revoked_at IS NULL AND tenant_id = :c"
                ),
                {"c": clinic.id},
            )

    assert await sessions_alive() == 1
    for garbage in ("not-a-session", f"vtk_{clinic.id.hex}_{'x' * 64}", "vts_"):
        answer = await login(client, email, headers=cookie(garbage))
        assert answer.status_code == 200, (garbage, answer.text)
    again = await login(client, email, headers=cookie(old))

    assert again.status_code == 200, again.text
    assert (await client.get("/api/v1/auth/me", headers=cookie(old))).status_code == 401
    assert await sessions_alive() == 4  # the three log-ins' and this one's: the old one ended


async def test_use_does_not_extend_a_session(client, world, superuser_engine) -> None:
    clinic = await world.clinic(roles=())
    secret = await world.login(clinic.owner)

    async def expiry() -> dt.datetime:
        async with superuser_engine.connect() as connection:
            return await connection.scalar(
                text("SELECT expires_at FROM credentials WHERE secret_hash = :h"),
                {"h": crypto.hash_secret(secret)},
            )

    before = await expiry()
    client.cookies.update(browser.cookies(secret))
    assert (await client.get("/api/v1/auth/me")).status_code == 200
    assert (await client.post("/api/v1/auth/tokens", json={"name": "x"})).status_code == 201
    assert await expiry() == before


async def test_a_role_change_ends_the_members_sessions_not_their_tokens(client, world) -> None:
    clinic = await world.clinic(roles=(Role.vet,))
    vet = clinic.actors[Role.vet]
    session = await world.login(vet)

    changed = await client.patch(
        f"/api/v1/staff/{vet.user.id}", json={"role": "technician"}, headers=clinic.owner.headers
    )

    assert changed.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=cookie(session))).status_code == 401
    me = await client.get("/api/v1/auth/me", headers=vet.headers)
    assert me.json()["role"] == "technician"
    # Changing something else (the same role) is no privilege change.
    again = await world.login(vet)
    same = await client.patch(
        f"/api/v1/staff/{vet.user.id}", json={"role": "technician"}, headers=clinic.owner.headers
    )
    assert same.status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=cookie(again))).status_code == 200


async def test_logout_everywhere_ends_every_session_and_token_in_every_clinic(
    client, world, superuser_engine
) -> None:
    here = await world.clinic(roles=(Role.vet,))
    there = await world.clinic(roles=())
    vet = here.actors[Role.vet]
    async with world.session(there.id) as session:
        await add_member(session, vet.user, Role.admin)
    there_vet = await world.actor(there.id, vet.user)
    sessions = [await world.login(vet), await world.login(there_vet)]
    colleague_session = await world.login(here.owner)

    client.cookies.update(browser.cookies(sessions[0]))
    done = await client.post("/api/v1/auth/logout-everywhere")
    client.cookies.clear()

    assert done.status_code == 204
    for dead in sessions:
        assert (await client.get("/api/v1/auth/me", headers=cookie(dead))).status_code == 401
    for token in (vet, there_vet):
        assert (await client.get("/api/v1/auth/me", headers=token.headers)).status_code == 401
    # Nobody else's credentials.
    assert (await client.get("/api/v1/auth/me", headers=here.owner.headers)).status_code == 200
    colleague = await client.get("/api/v1/auth/me", headers=cookie(colleague_session))
    assert colleague.status_code == 200
    async with superuser_engine.connect() as connection:
        live = await connection.scalar(
            text("SELECT count(*) FROM credentials WHERE user_id = :u AND revoked_at IS NULL"),
            {"u": vet.user.id},
        )
    assert live == 0
    set_cookies = done.headers.get_list("set-cookie")
    assert {c.split("=")[0] for c in set_cookies} == {SESSION_COOKIE, "vetify_csrf"}


async def test_an_api_token_cannot_log_out_everywhere(client, world) -> None:
    clinic = await world.clinic(roles=())
    refused = await client.post("/api/v1/auth/logout-everywhere", headers=clinic.owner.headers)
    assert refused.status_code == 403
    assert (await client.get("/api/v1/auth/me", headers=clinic.owner.headers)).status_code == 200


# -- cross-site requests (ADR 0009) --------------------------------------------------------------
# A bare client: the ``client`` fixture acts as the service's own page and would add the Origin
# and the CSRF token itself.
EVIL = "https://evil.example"
ANN = {"first_name": "Ann", "last_name": "Doe"}


@pytest.fixture
async def bare(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


async def _count(engine, sql: str, **params: object) -> int:
    async with engine.connect() as connection:
        return await connection.scalar(text(sql), params)


async def test_a_cookie_write_needs_our_origin_and_the_csrf_token(
    bare, world, settings, superuser_engine
) -> None:
    """Without our Origin, or without the right token, a cookie's write is refused, unwritten."""
    clinic = await world.clinic(roles=())
    secret = await world.login(clinic.owner)
    ours = csrf.origin_of(settings.public_url)
    token = csrf.token_for(secret)
    forged = [
        {csrf.CSRF_HEADER: token},  # no Origin or Referer
        {"Origin": ours},  # no token
        {"Origin": ours, csrf.CSRF_HEADER: token[:-1] + ("A" if token[-1] != "A" else "B")},
    ]
    customers = "SELECT count(*) FROM customers WHERE tenant_id = :c"
    before = await _count(superuser_engine, customers, c=clinic.id)

    for headers in forged:
        refused = await bare.post(
            "/api/v1/customers", json=ANN, headers={**browser.cookie_header(secret), **headers}
        )
        assert_problem(refused, 403, "csrf")
    assert await _count(superuser_engine, customers, c=clinic.id) == before

    genuine = await bare.post(
        "/api/v1/customers",
        json=ANN,
        headers={**browser.cookie_header(secret), "Origin": ours, csrf.CSRF_HEADER: token},
    )
    assert genuine.status_code == 201, genuine.text
    assert await _count(superuser_engine, customers, c=clinic.id) == before + 1


async def test_a_login_started_by_another_site_is_refused_and_a_scripts_is_not(
    bare, world, superuser_engine
) -> None:
    """A log-in stating a foreign Origin gets no session; one stating none (a script) does."""
    clinic = await world.clinic(roles=())
    owner = clinic.setup.owner
    credentials = "SELECT count(*) FROM credentials WHERE user_id = :u"
    before = await _count(superuser_engine, credentials, u=owner.id)

    refused = await login(bare, owner.email, headers={"Origin": EVIL})

    assert_problem(refused, 403, "csrf")
    assert "set-cookie" not in refused.headers
    assert await _count(superuser_engine, credentials, u=owner.id) == before
    scripted = await login(bare, owner.email)
    assert scripted.status_code == 200, scripted.text
    assert SESSION_COOKIE in scripted.cookies
    assert await _count(superuser_engine, credentials, u=owner.id) == before + 1


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": f"content-type, {csrf.CSRF_HEADER}",
    }


async def test_cors_answers_only_the_configured_origins(client, configured_app) -> None:
    """A configured front end's preflight is allowed by name; another origin's, and any by
    default, get no Access-Control-Allow-Origin."""
    front = "https://app.example"
    async with configured_app(cors_allow_origins=[front]) as app, asgi_client(app) as http:
        allowed = await http.options("/api/v1/customers", headers=_preflight(front))
        other = await http.options("/api/v1/customers", headers=_preflight(EVIL))
    closed = await client.options("/api/v1/customers", headers=_preflight(front))

    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == front
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert csrf.CSRF_HEADER.lower() in allowed.headers["access-control-allow-headers"].lower()
    for refused in (other, closed):
        assert "access-control-allow-origin" not in refused.headers
        assert not refused.is_success
