"""Session fixation: a session id planted in the victim's browser before login never becomes
the victim's session. Login always issues a new id; a planted id that is a live session is
revoked (not reused, not extended), and one that is not stays worthless."""

from __future__ import annotations

import secrets
import uuid

import httpx
from sqlalchemy import text

from app.auth.service import SESSION_COOKIE
from app.kit import crypto
from tests.harness.api import login
from tests.harness.world import World


async def _login_over(client: httpx.AsyncClient, email: str, planted: str) -> httpx.Response:
    """Log in from a browser that already holds the session cookie ``planted``."""
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, planted)
    try:
        return await login(client, email)
    finally:
        client.cookies.clear()


async def _me(client: httpx.AsyncClient, session: str) -> httpx.Response:
    return await client.get("/api/v1/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={session}"})


async def test_an_attackers_live_session_planted_before_login_is_ended(
    client, world: World, superuser_engine
) -> None:
    attacker = await world.clinic(roles=())
    victim = await world.clinic(roles=())
    planted = await world.login(attacker.owner)

    async def row() -> tuple:
        async with superuser_engine.connect() as connection:
            return (
                await connection.execute(
                    text(
                        "SELECT user_id, expires_at, revoked_at FROM credentials"
                        " WHERE secret_hash = :h"
                    ),
                    {"h": crypto.hash_secret(planted)},
                )
            ).one()

    before = await row()
    logged_in = await _login_over(client, victim.setup.owner.email, planted)
    after = await row()

    assert logged_in.status_code == 200
    issued = logged_in.cookies[SESSION_COOKIE]
    assert issued != planted
    assert (await _me(client, issued)).json()["user"]["id"] == str(victim.setup.owner.id)
    # The planted id was not turned into the victim's session, nor extended: it is over.
    assert (await _me(client, planted)).status_code == 401
    assert after.user_id == before.user_id == attacker.setup.owner.id
    assert after.expires_at == before.expires_at
    assert after.revoked_at is not None


async def test_a_forged_id_planted_before_login_is_never_adopted(client, world: World) -> None:
    victim = await world.clinic(roles=())
    forged = [
        secrets.token_urlsafe(32),
        f"vts_{victim.id.hex}_{secrets.token_urlsafe(32)}",
        f"vts_{uuid.uuid4().hex}_{secrets.token_urlsafe(32)}",
    ]

    for planted in forged:
        logged_in = await _login_over(client, victim.setup.owner.email, planted)
        assert logged_in.status_code == 200
        assert logged_in.cookies[SESSION_COOKIE] != planted
        assert (await _me(client, planted)).status_code == 401


async def test_logging_in_again_gives_a_new_id_and_ends_the_old(client, world: World) -> None:
    clinic = await world.clinic(roles=())
    first = await world.login(clinic.owner)

    again = await _login_over(client, clinic.setup.owner.email, first)

    assert again.cookies[SESSION_COOKIE] != first
    assert (await _me(client, first)).status_code == 401
    assert (await _me(client, again.cookies[SESSION_COOKIE])).status_code == 200
