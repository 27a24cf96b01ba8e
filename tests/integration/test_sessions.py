"""Login sessions over HTTP: expiry, privilege changes, and logging out everywhere."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from app.auth import service
from app.auth.models import CredentialKind, Role
from app.auth.service import SESSION_COOKIE
from app.kit import crypto
from fixtures.clinics import add_member
from fixtures.factories import CredentialFactory
from tests.harness import browser
from tests.harness.api import login


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
