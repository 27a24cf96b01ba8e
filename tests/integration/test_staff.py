"""Members of a clinic over HTTP: roles, the last owner, removal, and invitations."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from app.auth.models import Role
from fixtures.clinics import add_member
from fixtures.factories import DEFAULT_PASSWORD, InvitationFactory, UserFactory, create
from tests.harness import browser
from tests.harness.api import assert_problem, login
from tests.harness.mail import INVITATION, mailed_token, mails_to
from tests.harness.plugin import asgi_client

STAFF = "/api/v1/staff"
INVITATIONS = "/api/v1/staff/invitations"
ACCEPT = "/api/v1/auth/invitations/accept"
# pragma: allowlist nextline secret - a test user's passphrase
PASSWORD = "a long enough passphrase"


async def membership(engine, clinic, user_id) -> dict:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT role::text, active FROM memberships WHERE tenant_id = :c AND user_id = :u"
            ),
            {"c": clinic.id, "u": user_id},
        )
        return dict(result.mappings().one())


async def invite(client, clinic, email: str, role: str, actor: Role = Role.owner):
    return await client.post(
        INVITATIONS, json={"email": email, "role": role}, headers=clinic.actors[actor].headers
    )


async def token_of(settings, mailbox, invitation: dict) -> str:
    """The invitation's token, from the link mailed to the invitee."""
    return await mailed_token(settings, mailbox, invitation["email"], INVITATION)


async def accept(client, token: str, name: str = "Joana Reis"):
    return await client.post(ACCEPT, json={"token": token, "name": name, "password": PASSWORD})


# -- members ------------------------------------------------------------------------------------
async def test_list_shows_every_member_with_their_role(client, world):
    clinic = await world.clinic()
    await world.clinic()  # another clinic's staff stay out of the list

    response = await client.get(STAFF, headers=clinic.actors[Role.read_only].headers)

    assert response.status_code == 200
    assert response.json()["next_cursor"] is None
    listed = {m["user_id"]: m for m in response.json()["items"]}
    assert listed == {
        str(actor.user.id): {
            "user_id": str(actor.user.id),
            "name": actor.user.name,
            "email": actor.user.email,
            "role": role.value,
            "active": True,
        }
        for role, actor in clinic.actors.items()
    }


async def test_get_one_member(client, world):
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]

    response = await client.get(f"{STAFF}/{vet.user.id}", headers=clinic.owner.headers)
    foreign = await client.get(
        f"{STAFF}/{(await world.clinic()).owner.user.id}", headers=clinic.owner.headers
    )

    assert response.status_code == 200
    assert (response.json()["email"], response.json()["role"]) == (vet.user.email, "vet")
    assert_problem(foreign, 404, "not-found")


@pytest.mark.parametrize("actor", [Role.owner, Role.admin])
async def test_managers_change_a_vet_to_technician(client, world, superuser_engine, actor):
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]

    response = await client.patch(
        f"{STAFF}/{vet.user.id}", json={"role": "technician"}, headers=clinic.actors[actor].headers
    )

    assert response.status_code == 200
    assert (response.json()["role"], response.json()["active"]) == ("technician", True)
    assert await membership(superuser_engine, clinic, vet.user.id) == {
        "role": "technician",
        "active": True,
    }
    me = await client.get("/api/v1/auth/me", headers=vet.headers)
    assert me.json()["role"] == "technician"
    managing = await client.patch(
        "/api/v1/clinics/current", json={"name": "x"}, headers=vet.headers
    )
    assert_problem(managing, 403, "forbidden")


@pytest.mark.parametrize("role", [Role.vet, Role.technician, Role.receptionist, Role.read_only])
async def test_members_without_staff_manage_cannot_change_or_remove_anyone(
    client, world, superuser_engine, role
):
    clinic = await world.clinic()
    target = clinic.actors[Role.vet if role is Role.receptionist else Role.receptionist]

    promoted = await client.patch(
        f"{STAFF}/{target.user.id}", json={"role": "admin"}, headers=clinic.actors[role].headers
    )
    removed = await client.delete(f"{STAFF}/{target.user.id}", headers=clinic.actors[role].headers)

    assert_problem(promoted, 403, "forbidden")
    assert_problem(removed, 403, "forbidden")
    assert await membership(superuser_engine, clinic, target.user.id) == {
        "role": target.role.value,
        "active": True,
    }


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PATCH", {"role": "admin"}),
        ("PATCH", {"role": "owner"}),
        ("PATCH", {"active": False}),
        ("DELETE", None),
    ],
)
@pytest.mark.parametrize("role", [Role.owner, Role.admin])
async def test_no_one_changes_their_own_membership(
    client, world, superuser_engine, role, method, body
):
    clinic = await world.clinic()
    me = clinic.actors[role]

    response = await client.request(method, f"{STAFF}/{me.user.id}", json=body, headers=me.headers)

    assert_problem(response, 403, "forbidden")
    assert await membership(superuser_engine, clinic, me.user.id) == {
        "role": role.value,
        "active": True,
    }
    assert (await client.get("/api/v1/auth/me", headers=me.headers)).status_code == 200


async def test_an_owner_steps_down_by_another_owners_hand(client, world, superuser_engine):
    clinic = await world.clinic()
    async with world.session(clinic.id) as session:
        second = await create(session, UserFactory)
        await add_member(session, second, Role.owner)
    other = await world.actor(clinic.id, second)

    response = await client.patch(
        f"{STAFF}/{clinic.owner.user.id}",
        json={"role": "admin"},
        headers=browser.cookie_header(await world.step_up(other)),
    )
    last = await client.delete(f"{STAFF}/{second.id}", headers=clinic.owner.headers)

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    # Now an admin, the former owner may not touch the remaining owner.
    assert_problem(last, 403, "forbidden")
    assert await membership(superuser_engine, clinic, second.id) == {
        "role": "owner",
        "active": True,
    }


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    client, world, superuser_engine
):
    """Whichever way the race goes, one owner is left. When both requests get past the role
    check before either commits, the owner-count lock makes the second a 409; a later one
    is refused (401) because the demotion ended its session. Rounds repeat until the race
    was run. (Each from a session just logged in with a second factor: a step-up.)"""
    seen = []
    for _ in range(10):
        clinic = await world.clinic()
        async with world.session(clinic.id) as session:
            second = await create(session, UserFactory)
            await add_member(session, second, Role.owner)
        first, other = clinic.owner, await world.actor(clinic.id, second)
        sessions = [browser.cookie_header(await world.step_up(o)) for o in (first, other)]

        answers = await asyncio.gather(
            client.patch(f"{STAFF}/{second.id}", json={"role": "admin"}, headers=sessions[0]),
            client.patch(f"{STAFF}/{first.user.id}", json={"role": "admin"}, headers=sessions[1]),
        )

        statuses = sorted(a.status_code for a in answers)
        assert statuses in ([200, 401], [200, 409]), [a.text for a in answers]
        roles = [
            (await membership(superuser_engine, clinic, user_id))["role"]
            for user_id in (clinic.owner.user.id, second.id)
        ]
        assert sorted(roles) == ["admin", "owner"]
        seen.append(statuses[1])
        if 409 in seen:
            break
    assert 409 in seen, f"the two requests never overlapped in {len(seen)} rounds: {seen}"


@pytest.mark.parametrize(
    ("method", "body"),
    [("PATCH", {"role": "vet"}), ("PATCH", {"active": False}), ("DELETE", None)],
)
async def test_an_admin_cannot_change_an_owner(client, world, superuser_engine, method, body):
    clinic = await world.clinic()
    async with world.session(clinic.id) as session:
        second = await create(session, UserFactory)
        await add_member(session, second, Role.owner)  # so the last-owner rule is not what stops

    response = await client.request(
        method, f"{STAFF}/{second.id}", json=body, headers=clinic.actors[Role.admin].headers
    )

    assert_problem(response, 403, "forbidden")
    assert await membership(superuser_engine, clinic, second.id) == {
        "role": "owner",
        "active": True,
    }


async def test_an_admin_cannot_make_someone_owner(client, world, superuser_engine):
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]

    response = await client.patch(
        f"{STAFF}/{vet.user.id}", json={"role": "owner"}, headers=clinic.actors[Role.admin].headers
    )

    assert_problem(response, 403, "forbidden")
    assert (await membership(superuser_engine, clinic, vet.user.id))["role"] == "vet"


async def test_removing_a_member_deactivates_them_and_their_token(client, world, superuser_engine):
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]
    assert (await client.get("/api/v1/auth/me", headers=vet.headers)).status_code == 200

    response = await client.delete(f"{STAFF}/{vet.user.id}", headers=clinic.owner.headers)

    assert response.status_code == 204
    assert await membership(superuser_engine, clinic, vet.user.id) == {
        "role": "vet",
        "active": False,
    }
    async with superuser_engine.connect() as connection:
        unrevoked = await connection.scalar(
            text("SELECT count(*) FROM credentials WHERE user_id = :u AND revoked_at IS NULL"),
            {"u": vet.user.id},
        )
    assert unrevoked == 0
    refused = await client.get("/api/v1/customers", headers=vet.headers)
    assert_problem(refused, 401, "unauthenticated")
    assert "WWW-Authenticate" in refused.headers
    listed = await client.get(STAFF, headers=clinic.owner.headers)
    assert {m["user_id"]: m["active"] for m in listed.json()["items"]}[str(vet.user.id)] is False
    # The other members are unaffected.
    assert (
        await client.get(STAFF, headers=clinic.actors[Role.technician].headers)
    ).status_code == 200


async def test_removal_from_one_clinic_leaves_the_other_clinic_alone(client, world):
    clinic = await world.clinic()
    other = await world.clinic()
    vet = clinic.actors[Role.vet]
    async with world.session(other.id) as session:
        await add_member(session, vet.user, Role.admin)
    logged_in = await login(client, vet.user.email, clinic_id=str(other.id))
    assert logged_in.status_code == 200

    removed = await client.delete(f"{STAFF}/{vet.user.id}", headers=clinic.owner.headers)

    assert removed.status_code == 204
    assert_problem(await client.get(STAFF, headers=vet.headers), 401, "unauthenticated")
    me = await client.get("/api/v1/auth/me")  # the session cookie in the other clinic
    client.cookies.clear()
    assert me.status_code == 200
    assert (me.json()["clinic"]["id"], me.json()["role"]) == (str(other.id), "admin")


async def test_staff_pages_walk_every_member_once(client, world):
    clinic = await world.clinic()

    seen: list[str] = []
    params: dict[str, object] = {"limit": 2}
    for _ in range(10):
        body = (await client.get(STAFF, params=params, headers=clinic.owner.headers)).json()
        assert len(body["items"]) <= 2
        seen += [m["user_id"] for m in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": body["next_cursor"]}

    assert sorted(seen) == sorted(str(a.user.id) for a in clinic.actors.values())


async def test_unknown_member_is_404(client, world):
    clinic = await world.clinic()
    missing = "01900000-0000-7000-8000-000000000000"

    for method, body in [("GET", None), ("PATCH", {"role": "vet"}), ("DELETE", None)]:
        response = await client.request(
            method, f"{STAFF}/{missing}", json=body, headers=clinic.owner.headers
        )
        assert_problem(response, 404, "not-found")


# -- invitations --------------------------------------------------------------------------------
async def test_invite_accept_and_log_in_with_the_invited_role(
    client, world, superuser_engine, settings, mailbox
):
    clinic = await world.clinic()
    email = "joana.reis@example.com"

    invited = await invite(client, clinic, email, "receptionist")
    assert invited.status_code == 201
    invitation = invited.json()
    assert (invitation["email"], invitation["role"]) == (email, "receptionist")
    assert invitation["accepted_at"] is None
    assert invitation["revoked_at"] is None
    # The link goes to the invitee alone: neither the answer nor the list shows its secret.
    assert "vti_" not in invited.text
    token = await token_of(settings, mailbox, invitation)
    assert token.startswith("vti_")
    [mail] = mails_to(mailbox, email)
    assert clinic.setup.clinic.name in mail.get_content()
    assert clinic.owner.user.name in mail.get_content()

    listed = await client.get(INVITATIONS, headers=clinic.owner.headers)
    assert listed.status_code == 200
    assert [i["id"] for i in listed.json()] == [invitation["id"]]
    assert "vti_" not in listed.text

    accepted = await accept(client, token)
    assert accepted.status_code == 201
    assert accepted.json()["role"] == "receptionist"
    assert accepted.json()["clinic"]["id"] == str(clinic.id)
    assert accepted.json()["user"]["email"] == email
    assert accepted.json()["user"]["name"] == "Joana Reis"

    logged_in = await login(client, email, PASSWORD)
    assert logged_in.status_code == 200
    assert logged_in.json()["role"] == "receptionist"
    assert logged_in.json()["clinic"]["id"] == str(clinic.id)
    cookie = logged_in.cookies.get("vetify_session")
    assert cookie
    set_cookie = logged_in.headers["set-cookie"].lower()
    assert "httponly" in set_cookie
    assert "secure" in set_cookie

    me = await client.get("/api/v1/auth/me")  # the client sends the session cookie back
    assert me.status_code == 200
    assert me.json()["role"] == "receptionist"
    assert me.json()["user"]["email"] == email
    client.cookies.clear()

    staff = await client.get(STAFF, headers=clinic.owner.headers)
    roles = {m["email"]: m["role"] for m in staff.json()["items"]}
    assert roles[email] == "receptionist"
    after = await client.get(INVITATIONS, headers=clinic.owner.headers)
    assert after.json()[0]["accepted_at"] is not None


async def test_an_invitation_is_used_once(client, world, superuser_engine, settings, mailbox):
    clinic = await world.clinic()
    invitation = (await invite(client, clinic, "once@example.com", "vet")).json()
    token = await token_of(settings, mailbox, invitation)
    assert (await accept(client, token)).status_code == 201

    again = await accept(client, token, name="Someone Else")

    assert_problem(again, 404, "not-found")
    async with superuser_engine.connect() as connection:
        users = await connection.scalar(
            text("SELECT count(*) FROM users WHERE lower(email) = 'once@example.com'")
        )
        members = await connection.scalar(
            text(
                "SELECT count(*) FROM memberships m JOIN users u ON u.id = m.user_id"
                " WHERE u.email = 'once@example.com'"
            )
        )
    assert (users, members) == (1, 1)


@pytest.mark.parametrize(
    "token",
    [
        "x" * 60,  # not an invitation token at all
        "vti_" + "0" * 32 + "_" + "a" * 43,  # shaped like one, for no clinic
    ],
)
async def test_a_made_up_invitation_token_is_404(client, token):
    assert_problem(await accept(client, token), 404, "not-found")


async def test_a_too_short_invitation_token_is_422(client):
    response = await accept(client, "vti_short")

    assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "token"]]


async def test_an_admin_may_invite_staff_but_not_an_owner(client, world, superuser_engine):
    clinic = await world.clinic()

    owner = await invite(client, clinic, "boss@example.com", "owner", actor=Role.admin)
    vet = await invite(client, clinic, "vet@example.com", "vet", actor=Role.admin)

    assert_problem(owner, 403, "forbidden")
    assert vet.status_code == 201
    async with superuser_engine.connect() as connection:
        emails = (await connection.scalars(text("SELECT email FROM invitations"))).all()
    assert emails == ["vet@example.com"]


@pytest.mark.parametrize("role", [Role.vet, Role.technician, Role.receptionist, Role.read_only])
async def test_other_roles_cannot_invite_or_see_invitations(client, world, superuser_engine, role):
    clinic = await world.clinic()

    sent = await invite(client, clinic, "new@example.com", "read_only", actor=role)
    listed = await client.get(INVITATIONS, headers=clinic.actors[role].headers)

    assert_problem(sent, 403, "forbidden")
    assert_problem(listed, 403, "forbidden")
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM invitations")) == 0


async def test_a_withdrawn_invitation_cannot_be_accepted(
    client, world, superuser_engine, settings, mailbox
):
    clinic = await world.clinic()
    invitation = (await invite(client, clinic, "withdrawn@example.com", "technician")).json()
    token = await token_of(settings, mailbox, invitation)

    withdrawn = await client.delete(
        f"{INVITATIONS}/{invitation['id']}", headers=clinic.owner.headers
    )
    accepted = await accept(client, token)

    assert withdrawn.status_code == 204
    assert_problem(accepted, 404, "not-found")
    listed = await client.get(INVITATIONS, headers=clinic.owner.headers)
    assert listed.json()[0]["revoked_at"] is not None
    async with superuser_engine.connect() as connection:
        users = await connection.scalar(
            text("SELECT count(*) FROM users WHERE email = 'withdrawn@example.com'")
        )
    assert users == 0
    assert_problem(
        await login(client, "withdrawn@example.com", PASSWORD), 401, "invalid-credentials"
    )


async def test_withdrawing_an_unknown_invitation_is_404(client, world):
    clinic = await world.clinic()

    response = await client.delete(
        f"{INVITATIONS}/01900000-0000-7000-8000-000000000000", headers=clinic.owner.headers
    )

    assert_problem(response, 404, "not-found")


async def revoked_at(engine, invitation_id):
    async with engine.connect() as connection:
        return await connection.scalar(
            text("SELECT revoked_at FROM invitations WHERE id = :i"), {"i": invitation_id}
        )


async def test_withdrawing_an_invitation_to_administer_needs_a_step_up(
    client, world, superuser_engine
):
    """Who is invited to administer the clinic is a security setting: an API token cannot
    withdraw that invitation, a session that just passed MFA can. A technician's invitation
    is withdrawn with a token."""
    clinic = await world.clinic()
    admin, technician = [
        await world.make(clinic, InvitationFactory, role=role, invited_by=clinic.owner.user.id)
        for role in (Role.admin, Role.technician)
    ]

    by_token = await client.delete(f"{INVITATIONS}/{admin.id}", headers=clinic.owner.headers)
    assert_problem(by_token, 403, "step-up-required")
    assert await revoked_at(superuser_engine, admin.id) is None

    stepped_up = await client.delete(
        f"{INVITATIONS}/{admin.id}",
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )
    staff = await client.delete(f"{INVITATIONS}/{technician.id}", headers=clinic.owner.headers)

    assert (stepped_up.status_code, staff.status_code) == (204, 204)
    withdrawn = await revoked_at(superuser_engine, admin.id)
    assert withdrawn is not None
    assert await revoked_at(superuser_engine, technician.id) is not None
    # Withdrawn already: a token may ask again, and the first withdrawal stands.
    again = await client.delete(f"{INVITATIONS}/{admin.id}", headers=clinic.owner.headers)
    assert again.status_code == 204
    assert await revoked_at(superuser_engine, admin.id) == withdrawn


async def test_inviting_an_administrator_needs_a_step_up_and_a_technician_does_not(
    client, world, superuser_engine
):
    clinic = await world.clinic()

    by_token = await invite(client, clinic, "new.admin@example.com", "admin")
    technician = await invite(client, clinic, "new.tech@example.com", "technician")
    stepped_up = await client.post(
        INVITATIONS,
        json={"email": "new.admin@example.com", "role": "admin"},
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )

    assert_problem(by_token, 403, "step-up-required")
    assert (technician.status_code, stepped_up.status_code) == (201, 201)
    async with superuser_engine.connect() as connection:
        invited = await connection.execute(
            text("SELECT email, role::text FROM invitations WHERE tenant_id = :c ORDER BY 1"),
            {"c": clinic.id},
        )
        assert invited.all() == [
            ("new.admin@example.com", "admin"),
            ("new.tech@example.com", "technician"),
        ]


async def memberships_of(engine, user_id) -> dict:
    """The user's memberships in every clinic: clinic id -> role."""
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT tenant_id, role::text FROM memberships WHERE user_id = :u"),
            {"u": user_id},
        )
        return {clinic_id: role for clinic_id, role in result}


async def test_someone_with_an_account_joins_with_its_password(
    client, world, superuser_engine, settings, mailbox
):
    """An invitation to an address that already has an account (a vet of another clinic) is
    accepted by proving that account, as at log-in: a wrong password joins no clinic and leaves
    the invitation usable; the right one adds a membership to the same user."""
    clinic, elsewhere = await world.clinic(), await world.clinic()
    vet = elsewhere.actors[Role.vet]
    invitation = (await invite(client, clinic, vet.user.email, "technician")).json()
    token = await token_of(settings, mailbox, invitation)

    wrong = await client.post(ACCEPT, json={"token": token, "password": PASSWORD})
    assert_problem(wrong, 401, "invalid-credentials")
    assert await memberships_of(superuser_engine, vet.user.id) == {elsewhere.id: "vet"}

    right = await client.post(ACCEPT, json={"token": token, "password": DEFAULT_PASSWORD})

    assert right.status_code == 201, right.text
    assert right.json()["user"]["id"] == str(vet.user.id)
    assert (right.json()["clinic"]["id"], right.json()["role"]) == (str(clinic.id), "technician")
    assert await memberships_of(superuser_engine, vet.user.id) == {
        elsewhere.id: "vet",
        clinic.id: "technician",
    }
    logged_in = await login(client, vet.user.email, clinic_id=str(clinic.id))
    client.cookies.clear()
    assert (logged_in.status_code, logged_in.json()["role"]) == (200, "technician")


# -- log-in locks -------------------------------------------------------------------------------
# Two failed log-ins lock an account (the suite's own settings never lock one).
LOCKING = {"login_free_failures": 1, "login_lockout_failures": 2}


async def lock_out(http, email: str) -> None:
    """Wrong passwords until the account is locked: then the right one is refused too."""
    for _ in range(2):
        assert_problem(await login(http, email, PASSWORD), 401, "invalid-credentials")
    assert_problem(await login(http, email), 429, "login-throttled")


async def test_an_owner_who_stepped_up_lifts_a_members_lock(configured_app, world):
    """A member whose account opens this clinic alone may log in again once an owner, from a
    session that just passed MFA, lifts the lock."""
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]
    async with configured_app(**LOCKING) as app, asgi_client(app) as http:
        await lock_out(http, vet.user.email)

        response = await http.post(
            f"{STAFF}/{vet.user.id}/unlock",
            headers=browser.cookie_header(await world.step_up(clinic.owner)),
        )

        assert response.status_code == 204, response.text
        assert await app.state.login_guard.blocked_for(vet.user.email) == 0
        assert (await login(http, vet.user.email)).status_code == 200


async def test_no_clinic_lifts_the_lock_of_an_account_that_opens_another(configured_app, world):
    """The lock protects every clinic the account opens: one of them cannot lift it alone."""
    clinic, other = await world.clinic(), await world.clinic()
    vet = clinic.actors[Role.vet]
    async with world.session(other.id) as session:
        await add_member(session, vet.user, Role.vet)
    async with configured_app(**LOCKING) as app, asgi_client(app) as http:
        await lock_out(http, vet.user.email)

        response = await http.post(
            f"{STAFF}/{vet.user.id}/unlock",
            headers=browser.cookie_header(await world.step_up(clinic.owner)),
        )

        assert_problem(response, 409, "conflict")
        assert await app.state.login_guard.blocked_for(vet.user.email) > 0
        assert_problem(await login(http, vet.user.email), 429, "login-throttled")


async def test_an_api_token_cannot_lift_a_lock(configured_app, world):
    """Lifting a lock is a security setting: it needs a session that just passed MFA."""
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet]
    async with configured_app(**LOCKING) as app, asgi_client(app) as http:
        await lock_out(http, vet.user.email)

        response = await http.post(f"{STAFF}/{vet.user.id}/unlock", headers=clinic.owner.headers)

        assert_problem(response, 403, "step-up-required")
        assert await app.state.login_guard.blocked_for(vet.user.email) > 0
        assert_problem(await login(http, vet.user.email), 429, "login-throttled")
