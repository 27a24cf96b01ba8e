"""A credential acts in exactly one clinic, even for someone who belongs to two.

An API token is bound to the clinic it was made in; nothing in a request (a header, the query)
moves it elsewhere. A login session moves only by an explicit switch, which ends the old
session and starts a new one in the other clinic.
"""

from __future__ import annotations

import httpx

from app.auth.models import Role
from app.auth.service import SESSION_COOKIE
from fixtures.clinics import add_member
from tests.harness import browser
from tests.harness.api import login
from tests.harness.world import World
from tests.security.catalogue import STEERING_HEADERS
from tests.security.estate import Estate, ids_of


async def _member_of_both(world: World, ours: Estate, theirs: Estate):
    me = ours.clinic.owner
    async with world.session(theirs.clinic.id) as session:
        await add_member(session, me.user, Role.owner)
    return me


async def test_a_token_acts_only_in_the_clinic_it_was_made_in(
    client: httpx.AsyncClient, world: World, superuser_engine, estates
) -> None:
    ours, theirs = estates
    me = await _member_of_both(world, ours, theirs)
    their_ids = await ids_of(superuser_engine, theirs.clinic.id) - {str(me.user.id)}
    steer = {name: str(theirs.clinic.id) for name in STEERING_HEADERS}

    current = await client.get("/api/v1/clinics/current", headers={**me.headers, **steer})
    pets = await client.get(
        "/api/v1/pets", params={"clinic_id": str(theirs.clinic.id)}, headers=me.headers
    )
    their_record = await client.get(
        f"/api/v1/medical-records/{theirs['medical_record']}", headers=me.headers
    )
    switch = await client.post(
        "/api/v1/auth/switch", json={"clinic_id": str(theirs.clinic.id)}, headers=me.headers
    )
    made = await client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=me.headers)
    with_new_token = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {made.json()['token']}"}
    )

    assert current.json()["id"] == str(ours.clinic.id)
    assert pets.status_code == 200
    assert [p["id"] for p in pets.json()["items"]] == [str(ours["pet"])]
    assert not [i for i in their_ids if i in pets.text]
    assert their_record.status_code == 404
    assert switch.status_code == 403
    assert with_new_token.json()["clinic"]["id"] == str(ours.clinic.id)


async def test_a_session_changes_clinic_only_by_switching(
    client: httpx.AsyncClient, world: World, estates
) -> None:
    ours, theirs = estates
    me = await _member_of_both(world, ours, theirs)
    logged_in = await login(client, me.user.email, clinic_id=str(ours.clinic.id))
    first = logged_in.cookies[SESSION_COOKIE]
    client.cookies.clear()

    async def get(path: str, session: str) -> httpx.Response:
        client.cookies.set(SESSION_COOKIE, session)
        try:
            return await client.get(path)
        finally:
            client.cookies.clear()

    their_pet_before = await get(f"/api/v1/pets/{theirs['pet']}", first)
    client.cookies.update(browser.cookies(first))
    switched = await client.post("/api/v1/auth/switch", json={"clinic_id": str(theirs.clinic.id)})
    client.cookies.clear()
    second = switched.cookies[SESSION_COOKIE]

    assert logged_in.status_code == 200
    assert their_pet_before.status_code == 404
    assert switched.status_code == 200
    assert switched.json()["clinic"]["id"] == str(theirs.clinic.id)
    assert second != first
    assert (await get("/api/v1/auth/me", first)).status_code == 401
    assert (await get(f"/api/v1/pets/{theirs['pet']}", second)).status_code == 200
    assert (await get(f"/api/v1/pets/{ours['pet']}", second)).status_code == 404
