"""Multi-factor authentication over HTTP: enrolment, login with a code or a recovery code,
turning it off, recovery codes, and clinics that require it."""

from __future__ import annotations

import re
import urllib.parse
import uuid

import pytest
from sqlalchemy import text

from app.auth import mfa
from app.auth.models import Role, User
from app.auth.service import SESSION_COOKIE
from app.keys import service as keys
from app.kit.sealing import Unreadable
from fixtures.clinics import add_member
from tests.harness import browser
from tests.harness.api import assert_problem, login, problem_type
from tests.harness.authenticator import Authenticator
from tests.harness.world import ClinicWorld, World

MFA = "/api/v1/auth/mfa/totp"
CLINIC = "/api/v1/clinics/current"


async def enrol(client, email: str, **options: str) -> tuple[Authenticator, list[str]]:
    """Log in (``options`` as for ``login``) and turn multi-factor on through the API: the
    authenticator and recovery codes."""
    assert (await login(client, email, **options)).status_code == 200
    started = await client.post(MFA)
    assert started.status_code == 201, started.text
    authenticator = Authenticator(started.json()["secret"])
    confirmed = await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()})
    assert confirmed.status_code == 200, confirmed.text
    return authenticator, confirmed.json()["recovery_codes"]


async def test_enrolment_counts_only_once_confirmed(client, world: World) -> None:
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    assert (await login(client, email)).status_code == 200

    started = await client.post(MFA)

    assert started.status_code == 201
    secret = started.json()["secret"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    uri = started.json()["provisioning_uri"]
    assert uri.startswith("otpauth://totp/Vetify:")
    assert f"secret={secret}" in uri
    # Pending: login still needs no code, and a wrong confirmation changes nothing.
    client.cookies.clear()
    assert (await login(client, email)).status_code == 200
    wrong = await client.post(f"{MFA}/confirm", json={"code": "000000"})
    assert wrong.status_code == 422
    client.cookies.clear()
    assert (await login(client, email)).status_code == 200


async def test_login_needs_a_code_once_enrolled(client, world: World) -> None:
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    authenticator, codes = await enrol(client, email)
    client.cookies.clear()

    without = await login(client, email)
    wrong = await login(
        client,
        email,
        totp_code="123456" if authenticator.next_code() != "123456" else "654321",
    )
    right = await login(client, email, totp_code=authenticator.next_code())

    assert len(codes) == len(set(codes)) == 10
    for refused in (without, wrong):
        assert_problem(refused, 401, "mfa-required")
        assert "set-cookie" not in refused.headers
    assert right.status_code == 200, right.text
    assert (await client.get("/api/v1/auth/me")).status_code == 200


async def test_enabling_mfa_replaces_the_session_and_returns_new_cookies(
    client, world, security_events
) -> None:
    clinic = await world.clinic(roles=())
    assert (await login(client, clinic.setup.owner.email)).status_code == 200
    before = client.cookies.get(SESSION_COOKIE)
    authenticator = Authenticator((await client.post(MFA)).json()["secret"])

    confirmed = await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()})

    after = confirmed.cookies.get(SESSION_COOKIE)
    assert after
    assert after != before
    assert confirmed.json()["csrf_token"] == confirmed.cookies.get("vetify_csrf")
    client.cookies.clear()
    stale = await client.get("/api/v1/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={before}"})
    fresh = await client.get("/api/v1/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={after}"})
    assert stale.status_code == 401
    assert fresh.status_code == 200
    enrolled = [f for e, f in security_events if e == "mfa_enrolled"]
    assert [f["user_id"] for f in enrolled] == [str(clinic.setup.owner.id)]


async def test_a_recovery_code_logs_in_once_and_turns_mfa_off(client, world) -> None:
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    _, codes = await enrol(client, email)
    client.cookies.clear()

    first = await login(client, email, totp_code=codes[0].upper().replace("-", " "))
    assert first.status_code == 200, first.text
    disabled = await client.post(f"{MFA}/disable", json={"code": codes[1]})
    assert disabled.status_code == 200, disabled.text
    client.cookies.clear()

    assert (await login(client, email)).status_code == 200


async def test_enrolment_a_wrong_code_and_turning_it_off_are_security_events_and_leave_no_secret(
    client, world, superuser_engine, security_events
) -> None:
    clinic = await world.clinic(roles=())
    owner = clinic.setup.owner
    assert (await login(client, owner.email)).status_code == 200
    started = (await client.post(MFA)).json()
    assert f":{urllib.parse.quote(owner.email)}?" in started["provisioning_uri"]  # the account
    authenticator = Authenticator(started["secret"])
    assert (await client.post(f"{MFA}/confirm", json={"code": "000000"})).status_code == 422
    assert (
        await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()})
    ).status_code == 200
    disabled = await client.post(f"{MFA}/disable", json={"code": authenticator.next_code()})
    assert disabled.status_code == 200, disabled.text

    said = [
        (str(event), fields["outcome"], fields.get("user_id")) for event, fields in security_events
    ]
    mfa_steps = [step for step in said if step[0].startswith("mfa_")]
    assert mfa_steps == [
        ("mfa_failed", "refused", str(owner.id)),
        ("mfa_enrolled", "enabled", str(owner.id)),
        ("mfa_disabled", "disabled", str(owner.id)),
    ]
    async with superuser_engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT totp_secret_sealed, totp_enabled_at, totp_last_step, recovery_codes"
                    " FROM users WHERE id = :id"
                ),
                {"id": owner.id},
            )
        ).one()
    assert tuple(row) == (None, None, None, [])  # nothing of the old factor is kept


async def test_turning_mfa_on_or_off_ends_the_users_sessions_in_their_other_clinics(
    client, world: World
) -> None:
    clinic = await world.clinic(roles=())
    other = await world.clinic(roles=())
    owner = clinic.setup.owner
    async with world.session(other.id) as session:
        await add_member(session, owner, Role.admin)

    async def session_in_other(**code: str) -> str:
        response = await login(client, owner.email, clinic_id=str(other.id), **code)
        assert response.status_code == 200, response.text
        return response.cookies[SESSION_COOKIE]

    async def alive(cookie: str) -> bool:
        client.cookies.clear()
        me = await client.get("/api/v1/auth/me", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"})
        return me.status_code == 200

    before_enrolment = await session_in_other()
    authenticator, codes = await enrol(client, owner.email, clinic_id=str(clinic.id))
    assert not await alive(before_enrolment)

    before_disabling = await session_in_other(totp_code=authenticator.next_code())
    assert await alive(before_disabling)
    in_first = await login(client, owner.email, clinic_id=str(clinic.id), totp_code=codes[0])
    assert in_first.status_code == 200, in_first.text
    disabled = await client.post(f"{MFA}/disable", json={"code": authenticator.next_code()})
    assert disabled.status_code == 200, disabled.text
    assert not await alive(before_disabling)
    assert await alive(disabled.cookies[SESSION_COOKIE])  # the caller's new session


async def test_new_recovery_codes_replace_the_old(client, world) -> None:
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    authenticator, old = await enrol(client, email)

    renewed = await client.post(
        "/api/v1/auth/mfa/recovery-codes", json={"code": authenticator.next_code()}
    )
    assert renewed.status_code == 200, renewed.text
    new = renewed.json()["recovery_codes"]
    client.cookies.clear()

    assert not set(new) & set(old)
    assert (await login(client, email, totp_code=old[0])).json()["type"] == problem_type(
        "mfa-required"
    )
    assert (await login(client, email, totp_code=new[0])).status_code == 200


async def test_secrets_and_recovery_codes_are_stored_as_described(
    client, world, superuser_engine
) -> None:
    clinic = await world.clinic(roles=())
    authenticator, codes = await enrol(client, clinic.setup.owner.email)
    async with superuser_engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT totp_secret_sealed, totp_enabled_at, recovery_codes"
                    " FROM users WHERE id = :id"
                ),
                {"id": clinic.setup.owner.id},
            )
        ).one()
    # Sealed (ADR 0028): not in the row as it is stored, and opened only as this user's.
    assert authenticator.secret.encode() not in row.totp_secret_sealed
    async with world.session() as session:
        opened = await keys.unseal(
            session, keys.PLATFORM, mfa.SEALED_IN, clinic.setup.owner.id, row.totp_secret_sealed
        )
        assert opened == authenticator.secret
        with pytest.raises(Unreadable):
            await keys.unseal(
                session, keys.PLATFORM, mfa.SEALED_IN, uuid.uuid4(), row.totp_secret_sealed
            )
    assert row.totp_enabled_at is not None
    assert len(row.recovery_codes) == 10
    assert all(len(stored) == 32 for stored in row.recovery_codes)
    stored = b"".join(row.recovery_codes)
    assert not any(
        code.encode() in stored or code.replace("-", "").encode() in stored for code in codes
    )


# -- clinics that require it ------------------------------------------------------------------
@pytest.mark.mutation_targets("app/auth/principal.py::Principal.require_step_up")
async def test_requiring_mfa_needs_the_callers_own(client, world) -> None:
    """A security setting (step-up): the caller's session must have just passed their own
    second factor, so the one who turns it on is not the first to be shut out. Enrolling
    passes one, and gives a new session."""
    clinic = await world.clinic(roles=(Role.admin,))
    email = clinic.owner.user.email

    with_token = await client.patch(
        CLINIC, json={"require_mfa": True}, headers=clinic.owner.headers
    )
    assert (await login(client, email)).status_code == 200
    without_mfa = await client.patch(CLINIC, json={"require_mfa": True})
    await enrol(client, email)
    accepted = await client.patch(CLINIC, json={"require_mfa": True})

    said = [assert_problem(r, 403, "step-up-required")["detail"] for r in (with_token, without_mfa)]
    assert said == [
        "An API token never changes a security setting: use a login session that passed"
        " multi-factor authentication in the last few minutes.",
        "Security settings change only within minutes of a log-in that passed a second"
        " factor: log in again with your password and a code from your authenticator"
        " (turn multi-factor authentication on first if it is off).",
    ]
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["require_mfa"] is True


async def _requiring(world: World, client) -> ClinicWorld:
    clinic = await world.clinic(roles=(Role.vet,))
    turned_on = await client.patch(
        CLINIC,
        json={"require_mfa": True},
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )
    assert turned_on.status_code == 200
    return clinic


@pytest.mark.mutation_targets("app/auth/principal.py::Principal.require")
async def test_a_member_without_mfa_may_only_enrol_until_they_do(client, world) -> None:
    clinic = await _requiring(world, client)
    vet = clinic.actors[Role.vet]

    logged_in = await login(client, vet.user.email)
    assert logged_in.status_code == 200
    assert logged_in.json()["mfa_enrolment_required"] is True
    me = await client.get("/api/v1/auth/me")
    pets = await client.get("/api/v1/pets")
    with_token = await client.get("/api/v1/pets", headers=vet.headers)
    # What a session may still do (its own account, enrolling), a token may not.
    me_by_token = await client.get("/api/v1/auth/me", headers=vet.headers)

    assert me.status_code == 200
    for refused in (pets, with_token, me_by_token):
        body = assert_problem(refused, 403, "mfa-enrolment-required")
        assert body["detail"] == (
            "This clinic requires multi-factor authentication: log in with a session and"
            " enrol (POST /api/v1/auth/mfa/totp) first. API tokens of members without it"
            " are refused."
        )

    authenticator = Authenticator((await client.post(MFA)).json()["secret"])
    confirmed = await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["mfa_enrolment_required"] is False
    assert (await client.get("/api/v1/pets")).status_code == 200
    assert (await client.get("/api/v1/pets", headers=vet.headers)).status_code == 200


async def test_turning_the_requirement_off_lifts_the_restriction(client, world) -> None:
    clinic = await _requiring(world, client)
    vet = clinic.actors[Role.vet]
    assert (await client.get("/api/v1/pets", headers=vet.headers)).status_code == 403

    off = await client.patch(
        CLINIC,
        json={"require_mfa": False},
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )

    assert off.status_code == 200
    assert (await client.get("/api/v1/pets", headers=vet.headers)).status_code == 200


async def test_each_step_out_of_order_is_a_409_that_changes_nothing(client, world: World) -> None:
    """Confirm before starting, turn off or renew codes while off, start or confirm while on."""
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    assert (await login(client, email)).status_code == 200
    off = [
        await client.post(f"{MFA}/confirm", json={"code": "123456"}),
        await client.post(f"{MFA}/disable", json={"code": "123456"}),
        await client.post("/api/v1/auth/mfa/recovery-codes", json={"code": "123456"}),
    ]
    client.cookies.clear()
    authenticator, _ = await enrol(client, email)
    on = [
        await client.post(MFA),
        await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()}),
    ]

    for answer in off + on:
        assert_problem(answer, 409, "conflict")
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200


async def test_each_refusal_says_what_is_wrong_and_where(client, world: World) -> None:
    """A client shows the detail to the person enrolling: every refusal says which step is out
    of order, a wrong code names the field it came in (a form marks it), and an API token is
    told that only a login session may change the second factor."""
    clinic = await world.clinic(roles=())
    email = clinic.setup.owner.email
    already_on = "Multi-factor authentication is already on."
    not_on = "Multi-factor authentication is not on."
    wrong = "The code is not valid or was already used."

    def said(answer, status: int, slug: str, detail: str) -> dict:
        body = assert_problem(answer, status, slug)
        assert body["detail"] == detail, body
        return body

    def names_the_code(body: dict) -> None:
        assert body["errors"] == [
            {"loc": ["body", "code"], "msg": body["detail"], "type": "invalid_code"}
        ], body

    for path in (MFA, f"{MFA}/confirm", f"{MFA}/disable", "/api/v1/auth/mfa/recovery-codes"):
        said(
            await client.post(path, headers=clinic.owner.headers, json={"code": "123456"}),
            403,
            "forbidden",
            "Multi-factor settings change only from a login session.",
        )

    assert (await login(client, email)).status_code == 200
    first = "Start enrolment first (POST /api/v1/auth/mfa/totp)."
    said(await client.post(f"{MFA}/confirm", json={"code": "123456"}), 409, "conflict", first)
    said(await client.post(f"{MFA}/disable", json={"code": "123456"}), 409, "conflict", not_on)
    renew = await client.post("/api/v1/auth/mfa/recovery-codes", json={"code": "123456"})
    said(renew, 409, "conflict", not_on)

    started = await client.post(MFA)
    assert started.status_code == 201, started.text
    authenticator = Authenticator(started.json()["secret"])
    mismatch = "The code does not match the new secret (or was already used)."
    names_the_code(
        said(
            await client.post(f"{MFA}/confirm", json={"code": authenticator.code_at_offset(10)}),
            422,
            "validation-error",
            mismatch,
        )
    )
    confirmed = await client.post(f"{MFA}/confirm", json={"code": authenticator.next_code()})
    assert confirmed.status_code == 200, confirmed.text

    said(
        await client.post(MFA),
        409,
        "conflict",
        "Multi-factor authentication is already on; turn it off first.",
    )
    code = authenticator.next_code()
    said(await client.post(f"{MFA}/confirm", json={"code": code}), 409, "conflict", already_on)
    for path in (f"{MFA}/disable", "/api/v1/auth/mfa/recovery-codes"):
        body = said(
            await client.post(path, json={"code": authenticator.code_at_offset(10)}),
            422,
            "validation-error",
            wrong,
        )
        names_the_code(body)


@pytest.mark.mutation_targets("app/auth/mfa.py::accept_totp")
async def test_a_code_accepted_marks_its_step_used_for_that_user_alone(
    world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.vet,))
    first, second = clinic.setup.owner, clinic.actors[Role.vet].user
    secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # nosec B105  # pragma: allowlist secret
    for user in (first, second):
        await world.enrol_mfa(user, secret=secret)
    code = Authenticator(secret).next_code()

    async with world.session(clinic.id) as session:
        user = await session.get_one(User, first.id)
        assert await mfa.accept_totp(session, user, code) is True
        assert await mfa.accept_totp(session, user, code) is False  # never twice

    async with superuser_engine.connect() as connection:
        steps = dict(
            (
                await connection.execute(
                    text("SELECT id, totp_last_step FROM users WHERE id IN (:a, :b)"),
                    {"a": first.id, "b": second.id},
                )
            ).all()
        )
    assert steps[first.id] == mfa.matching_step(secret, code)
    assert steps[second.id] is None  # the other user's codes are all still good
