from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from app.auth import service
from app.auth.models import CredentialKind, Role
from app.kit import crypto
from fixtures.clinics import add_member
from fixtures.factories import CredentialFactory
from tests.harness.api import PROBLEM_JSON, assert_problem, login, signup

SIGNUP = {
    "clinic_name": "Harbour Vets",
    "owner_name": "Dr. Rui Costa",
    "email": "rui@harbour.example",
    # pragma: allowlist nextline secret - a test user's passphrase
    "password": "a long enough passphrase",
    "timezone": "Europe/Lisbon",
}


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"vetify_session={value}"}


async def test_signup_creates_clinic_location_and_owner_who_can_log_in(client):
    created = await signup(client, SIGNUP)
    assert created.status_code == 201, created.text

    logged_in = await login(client, "RUI@harbour.example", SIGNUP["password"])
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["role"] == "owner"
    assert logged_in.json()["clinic"]["id"] == created.json()["clinic"]["id"]
    # The session's own cookie (the login sets others, which carry attributes of their own).
    (cookie,) = [
        c.lower()
        for c in logged_in.headers.get_list("set-cookie")
        if c.startswith(service.SESSION_COOKIE)
    ]
    attributes = {attribute.strip() for attribute in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes

    me = await client.get("/api/v1/auth/me")
    assert me.json()["user"]["email"] == SIGNUP["email"]
    locations = await client.get("/api/v1/locations")
    assert [loc["id"] for loc in locations.json()["items"]] == [created.json()["location_id"]]


async def test_passwords_are_stored_as_argon2id_hashes(client, superuser_engine):
    await signup(client, SIGNUP)
    async with superuser_engine.connect() as connection:
        stored = await connection.scalar(text("SELECT password_hash FROM users"))
    assert stored.startswith("$argon2id$")
    assert SIGNUP["password"] not in stored


async def test_wrong_password_and_unknown_email_get_the_same_answer(client, world):
    clinic = await world.clinic(roles=())
    wrong = await login(client, clinic.setup.owner.email, "not the password")
    unknown = await login(client, "nobody@nowhere.example", "not the password")

    assert wrong.status_code == unknown.status_code == 401
    # All but the request's own id.
    assert {k: v for k, v in wrong.json().items() if k != "request_id"} == {
        k: v for k, v in unknown.json().items() if k != "request_id"
    }
    assert "set-cookie" not in wrong.headers


def _set_cookies(response) -> dict[str, tuple[str, dict[str, str]]]:
    """Each cookie the response sets: its value and its attributes (names lowercased)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        pair, *attributes = (part.strip() for part in header.split(";"))
        name, _, value = pair.partition("=")
        found[name] = (
            value,
            {k.lower(): v for k, _, v in (a.partition("=") for a in attributes)},
        )
    return found


@pytest.mark.mutation_targets(
    "app/auth/signin.py::set_session_cookies",
    "app/auth/signin.py::clear_session_cookies",
    "app/auth/routes.py::_session_body",
)
async def test_the_session_and_csrf_cookies_carry_their_attributes_and_are_cleared_alike(
    client, world
):
    clinic = await world.clinic(roles=())
    logged_in = await login(client, clinic.setup.owner.email)
    assert logged_in.status_code == 200, logged_in.text
    expires = dt.datetime.fromisoformat(logged_in.json()["expires_at"])

    made = _set_cookies(logged_in)
    (session_secret, session), (csrf_token, csrf) = made["vetify_session"], made["vetify_csrf"]
    shared = {"secure": "", "samesite": "strict", "path": "/"}
    assert session == {**shared, "httponly": "", "expires": session["expires"]}
    assert csrf == {**shared, "expires": csrf["expires"]}  # not HttpOnly: the pages read it
    for attributes in (session, csrf):
        when = dt.datetime.strptime(attributes["expires"], "%a, %d %b %Y %H:%M:%S GMT")
        assert when.replace(tzinfo=dt.UTC) == expires.replace(microsecond=0)
    assert csrf_token == logged_in.json()["csrf_token"] != session_secret

    logged_out = await client.post("/api/v1/auth/logout")
    assert logged_out.status_code == 204
    cleared = _set_cookies(logged_out)
    assert set(cleared) == {"vetify_session", "vetify_csrf"}
    for name, httponly in (("vetify_session", True), ("vetify_csrf", False)):
        value, attributes = cleared[name]
        assert value in ("", '""')
        assert attributes["max-age"] == "0"
        assert {k: attributes[k] for k in shared} == shared
        assert ("httponly" in attributes) is httponly


async def test_logout_ends_the_session_at_once(client, world):
    clinic = await world.clinic(roles=())
    await login(client, clinic.setup.owner.email)
    assert (await client.get("/api/v1/auth/me")).status_code == 200
    session_cookie = client.cookies.get("vetify_session")

    assert (await client.post("/api/v1/auth/logout")).status_code == 204

    again = await client.get("/api/v1/auth/me", headers=_cookie(session_cookie))
    assert again.status_code == 401
    assert again.headers["content-type"] == PROBLEM_JSON


async def test_api_token_lifecycle(client, world, superuser_engine):
    clinic = await world.clinic(roles=(Role.read_only,))
    reader = clinic.actors[Role.read_only]

    created = await client.post(
        "/api/v1/auth/tokens",
        json={"name": "laptop script", "expires_in_days": 7},
        headers=reader.headers,
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/pets", headers=bearer)).status_code == 200

    listed = await client.get("/api/v1/auth/tokens", headers=bearer)
    names = {t["name"] for t in listed.json()}
    assert "laptop script" in names
    assert all("token" not in t for t in listed.json())
    async with superuser_engine.connect() as connection:
        stored = (
            (await connection.execute(text("SELECT secret_hash FROM credentials"))).scalars().all()
        )
    assert all(token.encode() not in value for value in stored)

    revoked = await client.delete(
        f"/api/v1/auth/tokens/{created.json()['id']}", headers=reader.headers
    )
    assert revoked.status_code == 204
    after = await client.get("/api/v1/pets", headers=bearer)
    assert after.status_code == 401
    async with superuser_engine.connect() as connection:
        first = await connection.scalar(
            text("SELECT revoked_at FROM credentials WHERE id = :id"), {"id": created.json()["id"]}
        )
    again = await client.delete(
        f"/api/v1/auth/tokens/{created.json()['id']}", headers=reader.headers
    )
    assert again.status_code == 204  # revoked already: kept as it was, the first time's
    async with superuser_engine.connect() as connection:
        assert (
            await connection.scalar(
                text("SELECT revoked_at FROM credentials WHERE id = :id"),
                {"id": created.json()["id"]},
            )
            == first
        )


async def test_a_token_cannot_revoke_someone_elses_token(client, world):
    clinic = await world.clinic(roles=(Role.vet,))
    vet = clinic.actors[Role.vet]
    mine = await client.post("/api/v1/auth/tokens", json={"name": "vet's"}, headers=vet.headers)

    attempt = await client.delete(
        f"/api/v1/auth/tokens/{mine.json()['id']}", headers=clinic.owner.headers
    )

    assert attempt.status_code == 404
    token = mine.json()["token"]
    still = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert still.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer vtk_",
        "Bearer vtk_nothex_" + "x" * 43,
        "Bearer vtk_" + "0" * 32 + "_" + "x" * 43,
        "Bearer vts_" + "0" * 32 + "_" + "x" * 43,
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ],
)
async def test_malformed_or_forged_tokens_get_401(client, authorization):
    response = await client.get("/api/v1/pets", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM_JSON


@pytest.mark.mutation_targets("app/auth/deps.py::authenticate", "app/auth/deps.py::_identify")
async def test_a_refusal_says_which_credential_to_send(client, world):
    clinic = await world.clinic(roles=())
    unknown, _ = crypto.new_credential(service.TOKEN_PREFIX, clinic.id)  # well formed, not issued
    none = await client.get("/api/v1/pets")
    forged = await client.get("/api/v1/pets", headers={"Authorization": f"Bearer {unknown}"})
    said = [assert_problem(answer, 401, "unauthenticated")["detail"] for answer in (none, forged)]
    assert said == [
        "Send an API token (Authorization: Bearer) or log in.",
        "The credential is not valid, has expired or was revoked.",
    ]


async def test_expired_token_and_idle_session_are_refused(client, world):
    clinic = await world.clinic(roles=())
    membership_user = clinic.setup.owner

    expired_secret, expired_hash = crypto.new_credential(service.TOKEN_PREFIX, clinic.id)
    idle_secret, idle_hash = crypto.new_credential(service.SESSION_PREFIX, clinic.id)
    now = dt.datetime.now(dt.UTC)
    await world.make(
        clinic,
        CredentialFactory,
        user_id=membership_user.id,
        secret_hash=expired_hash,
        expires_at=now - dt.timedelta(seconds=1),
    )
    await world.make(
        clinic,
        CredentialFactory,
        user_id=membership_user.id,
        secret_hash=idle_hash,
        kind=CredentialKind.session,
        last_used_at=now - dt.timedelta(hours=2),
    )

    expired = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {expired_secret}"}
    )
    idle = await client.get("/api/v1/auth/me", headers=_cookie(idle_secret))

    assert expired.status_code == 401
    assert idle.status_code == 401
    assert "idle" in idle.json()["detail"]


async def test_a_token_acts_only_in_its_own_clinic(client, world):
    """A user in two clinics: each token is bound to one, and switching is explicit."""
    clinic_a = await world.clinic(roles=())
    clinic_b = await world.clinic(roles=())
    user = clinic_a.setup.owner
    async with world.session(clinic_b.id) as session:
        await add_member(session, user, Role.receptionist)

    current = await client.get("/api/v1/clinics/current", headers=clinic_a.owner.headers)
    assert current.json()["id"] == str(clinic_a.id)
    switch = await client.post(
        "/api/v1/auth/switch", json={"clinic_id": str(clinic_b.id)}, headers=clinic_a.owner.headers
    )
    assert switch.status_code == 403


async def test_login_with_several_clinics_needs_a_choice_and_switch_moves_the_session(
    client, world
):
    clinic_a = await world.clinic(roles=())
    clinic_b = await world.clinic(roles=())
    outsider = await world.clinic(roles=())
    user = clinic_a.setup.owner
    async with world.session(clinic_b.id) as session:
        await add_member(session, user, Role.receptionist)

    ambiguous = await login(client, user.email)
    assert ambiguous.status_code == 409
    assert str(clinic_a.id) in ambiguous.json()["detail"]
    assert str(clinic_b.id) in ambiguous.json()["detail"]

    # Not "not a member": that would tell a right password from a wrong one (issue 15, 7).
    not_mine = await login(client, user.email, clinic_id=str(outsider.id))
    assert_problem(not_mine, 401, "invalid-credentials")

    in_a = await login(client, user.email, clinic_id=str(clinic_a.id))
    assert in_a.json()["role"] == "owner"
    old_cookie = client.cookies.get("vetify_session")

    switched = await client.post("/api/v1/auth/switch", json={"clinic_id": str(clinic_b.id)})
    assert switched.status_code == 200, switched.text
    assert switched.json()["role"] == "receptionist"
    current = await client.get("/api/v1/clinics/current")
    assert current.json()["id"] == str(clinic_b.id)
    # The session in clinic A ended with the switch.
    client.cookies.clear()
    stale = await client.get("/api/v1/auth/me", headers=_cookie(old_cookie))
    assert stale.status_code == 401


async def test_signup_with_an_existing_email_needs_its_password(client):
    first = await signup(client, SIGNUP)
    wrong = await signup(
        client,
        SIGNUP,
        clinic_name="Second",
        # pragma: allowlist nextline secret - a test user's passphrase
        password="a different passphrase",
    )
    right = await signup(client, SIGNUP, clinic_name="Second")

    assert wrong.status_code == 401
    assert right.status_code == 201
    assert right.json()["user"]["id"] == first.json()["user"]["id"]
    assert right.json()["clinic"]["id"] != first.json()["clinic"]["id"]


@pytest.mark.parametrize(
    "change",
    [
        # pragma: allowlist nextline secret - a too-short password the API must refuse
        {"password": "short"},
        {"email": "not-an-email"},
        {"timezone": "Mars/Olympus"},
        {"clinic_name": ""},
    ],
)
async def test_signup_validates_its_input_and_creates_nothing(client, superuser_engine, change):
    response = await signup(client, SIGNUP, **change)

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM clinics")) == 0


async def test_a_deactivated_member_is_locked_out(client, world):
    clinic = await world.clinic(roles=(Role.technician,))
    tech = clinic.actors[Role.technician]
    removed = await client.delete(f"/api/v1/staff/{tech.user.id}", headers=clinic.owner.headers)
    assert removed.status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=tech.headers)).status_code == 401
    assert (await login(client, tech.user.email)).status_code == 401
