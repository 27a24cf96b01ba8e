"""Security settings change only from a session logged in minutes ago with a second factor.

Generated from the route table (:mod:`tests.security.catalogue`): every write route a caller
with credentials may use is sent each of its requests three times, as the owner of a clinic
that requires MFA (the owner has it): with their API token, with their session logged in
longer ago than ``VETIFY_STEP_UP_MINUTES``, and with their session logged in just now. Its
requests are the example body and that body with each boolean and enum field set to each
value, on targets of each standing (a plain member, an administrator, an owner; an invitation
to a plain role or an administrator's). Every member's account is locked before each request.

What the last of the three changes in the clinic's security settings (:data:`SETTINGS`) makes
the request a security change. The first two must then be refused with 403 step-up-required and
change nothing in the clinic. Neither may ever change a setting. The settings a route's requests
change must be exactly those ``catalogue.STEP_UP`` declares for it, and such a route documents
the refusal. So a new route that changes a security setting without step-up fails, named.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.lockout import LoginGuard
from app.auth.models import Role
from app.auth.permissions import Action, allows
from app.clinics.models import Clinic
from app.kit.problems import InvalidCredentials
from fixtures.clinics import add_member
from fixtures.factories import InvitationFactory, UserFactory, create
from tests.harness import browser, tally
from tests.harness.api import assert_problem, login, problem_type
from tests.harness.authenticator import Authenticator
from tests.harness.plugin import asgi_client
from tests.harness.world import Actor, ClinicWorld, World
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    STEP_UP,
    Credentials,
    Route,
    body_for,
    explain,
    problem,
    send,
)
from tests.security.estate import Estate, fresh, furnish, rows_of
from tests.security.surface import resolve, types

STEP_UP_MINUTES = 5
LONG_AGO = dt.timedelta(minutes=STEP_UP_MINUTES + 1)
# One free failure, the second locks: every member's account is locked before each request.
APP = {
    "step_up_minutes": STEP_UP_MINUTES,
    "login_free_failures": 1,
    "login_lockout_failures": 2,
    "login_lockout_minutes": 5,
}
STEP_UP_REQUIRED = problem_type("step-up-required")
ADMINISTRATORS = sorted(
    role for role in Role if allows(role, Action.staff_manage) or allows(role, Action.clinic_manage)
)
"""The roles that decide who may do what in the clinic, read from the permission table."""
WRITES = [route for route in ATTACKED if route.method not in {"GET", "HEAD"} and not route.public]
LONGEST_ENUM = 12
"""An enum longer than this lists names (time zones), not settings: its first and last only."""


# -- the clinic's security settings ----------------------------------------------------------
SETTINGS = (
    "require_mfa",
    "client retention",
    "record retention",
    "administrators",
    "invited administrators",
    "locked accounts",
)
_SETTINGS_SQL = {
    "require_mfa": "SELECT require_mfa::text FROM clinics WHERE id = :clinic",
    # How long an inactive client keeps their identity: shortened, the next run erases.
    "client retention": "SELECT coalesce(inactive_client_years::text, 'none') FROM clinics"
    " WHERE id = :clinic",
    # How long medical records are kept, and the country whose minimum applies: shortened, the
    # next run removes records (ADR 0035).
    "record retention": "SELECT concat_ws(' ', coalesce(country, 'none'),"
    " coalesce(record_retention_years::text, 'none')) FROM clinics WHERE id = :clinic",
    "administrators": "SELECT concat_ws(' ', user_id, role, active) FROM memberships"
    " WHERE tenant_id = :clinic AND role::text = ANY(:roles)",
    "invited administrators": "SELECT concat_ws(' ', email, role) FROM invitations"
    " WHERE tenant_id = :clinic AND role::text = ANY(:roles)"
    " AND accepted_at IS NULL AND revoked_at IS NULL",
}


async def _member_emails(engine: AsyncEngine, clinic_id: uuid.UUID) -> list[str]:
    async with engine.connect() as connection:
        emails = await connection.scalars(
            text(
                "SELECT u.email FROM users u JOIN memberships m ON m.user_id = u.id"
                " WHERE m.tenant_id = :clinic ORDER BY 1"
            ),
            {"clinic": clinic_id},
        )
        return list(emails.all())


async def _locked(guard: LoginGuard, email: str) -> bool:
    return await guard.blocked_for(email) > 0


async def settings_of(
    engine: AsyncEngine, guard: LoginGuard, clinic_id: uuid.UUID
) -> dict[str, list[str]]:
    """The clinic's :data:`SETTINGS`: how its members log in, who administers it or is invited
    to, and whose log-in is locked."""
    found = {}
    async with engine.connect() as connection:
        for name, sql in _SETTINGS_SQL.items():
            rows = await connection.scalars(
                text(sql), {"clinic": clinic_id, "roles": [str(r) for r in ADMINISTRATORS]}
            )
            found[name] = sorted(rows.all())
    found["locked accounts"] = [
        email for email in await _member_emails(engine, clinic_id) if await _locked(guard, email)
    ]
    return found


async def lock_everyone(engine: AsyncEngine, guard: LoginGuard, clinic_id: uuid.UUID) -> None:
    for email in await _member_emails(engine, clinic_id):
        while not await _locked(guard, email):
            with contextlib.suppress(InvalidCredentials):
                async with guard.attempt(email):
                    raise InvalidCredentials("a wrong password")


# -- what each route is sent -----------------------------------------------------------------
Maker = Callable[[World, ClinicWorld], Awaitable[uuid.UUID]]


def _member_as(role: Role) -> Maker:
    async def make(world: World, clinic: ClinicWorld) -> uuid.UUID:
        async with world.session(clinic.id) as session:
            user = await create(session, UserFactory)
            await add_member(session, user, role)
        return uuid.UUID(str(user.id))

    return make


def _invitation_as(role: Role) -> Maker:
    async def make(world: World, clinic: ClinicWorld) -> uuid.UUID:
        invitation = await world.make(
            clinic, InvitationFactory, role=role, invited_by=clinic.owner.user.id
        )
        return uuid.UUID(str(invitation.id))

    return make


def _fresh(kind: str) -> Maker:
    async def make(world: World, clinic: ClinicWorld) -> uuid.UUID:
        return await fresh(world, clinic, kind, clinic.owner)

    return make


STANDINGS: dict[str, list[tuple[str, Maker]]] = {
    "member": [
        (f"a member as {role}", _member_as(role)) for role in (Role.technician, *ADMINISTRATORS)
    ],
    "invitation": [
        (f"an invitation as {role}", _invitation_as(role))
        for role in (Role.technician, *ADMINISTRATORS)
    ],
}
"""Targets of each standing, for the kinds of resource whose standing a setting is about."""


def _targets(route: Route) -> list[tuple[str, dict[str, Maker]]]:
    """(label, a maker for each path parameter's kind) for each combination of standings."""
    combinations: list[tuple[str, dict[str, Maker]]] = [("", {})]
    for name in route.path_params:
        kind = ID_KINDS[name]
        makers = STANDINGS.get(kind, [(kind, _fresh(kind))])
        combinations = [
            (f"{label} {standing}".strip(), {**chosen, kind: make})
            for label, chosen in combinations
            for standing, make in makers
        ]
    return combinations


def _values(schema: dict[str, Any]) -> list[Any]:
    """Each value a boolean or enum field takes (of a long enum, its first and last), and an
    integer's bounds."""
    if "boolean" in types(schema):
        return [False, True]
    for part in [schema, *resolve(schema).get("anyOf", [])]:
        bounds = resolve(part)
        if bounds.get("type") == "integer" and {"minimum", "maximum"} <= set(bounds):
            return [bounds["minimum"], bounds["maximum"]]
    enum: list[Any] = []
    for part in [schema, *resolve(schema).get("anyOf", []), *resolve(schema).get("oneOf", [])]:
        enum += resolve(part).get("enum", [])
    return enum if len(enum) <= LONGEST_ENUM else [enum[0], enum[-1]]


def _variants(route: Route, example: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The example body, then the example with each boolean and enum field set to each value."""
    if example is None or route.body_schema is None or route.multipart:
        return [("", example)]
    properties = resolve({"$ref": f"#/components/schemas/{route.body_schema}"}).get(
        "properties", {}
    )
    return [("the example", example)] + [
        (f"{field}={value}", {**example, field: value})
        for field, schema in properties.items()
        for value in _values(schema)
    ]


async def _session(world: World, actor: Actor, ago: dt.timedelta = dt.timedelta(0)) -> Credentials:
    return Credentials({}, browser.cookies(await world.login(actor, ago=ago)))


tally.size(
    "step-up matrix",
    f"{len(WRITES)} write routes x every standing of their targets x every boolean and enum"
    " value and integer bound in their bodies x 3 credentials (API token, stale session, fresh"
    " session)",
)


def test_the_declared_routes_name_every_setting_and_exist() -> None:
    assert {name for names in STEP_UP.values() for name in names} == set(SETTINGS)
    assert set(STEP_UP) <= {route.key for route in WRITES}


@pytest.mark.parametrize("route", WRITES, ids=lambda r: r.label)
async def test_a_security_setting_changes_only_from_a_session_that_just_passed_mfa(
    configured_app, world: World, superuser_engine: AsyncEngine, route: Route
) -> None:
    """(issue 15, defect 9: an API token turned the clinic's MFA requirement off, although
    every MFA route refuses tokens.)"""
    clinic = await world.clinic()
    estate: Estate = await furnish(world, clinic)
    owner = clinic.owner
    await world.enrol_mfa(owner.user)
    async with world.session(clinic.id) as session:
        await session.execute(update(Clinic).where(Clinic.id == clinic.id).values(require_mfa=True))

    failures: list[str] = []
    changed: set[str] = set()
    async with configured_app(**APP) as app, asgi_client(app) as http:
        guard: LoginGuard = app.state.login_guard
        for standing, makers in _targets(route):
            ids = {kind: await make(world, clinic) for kind, make in makers.items()}
            url = route.url(ids)
            for variant, _ in _variants(route, route.body(estate)):
                case = f"{standing} {variant}".strip() or "the request"
                tally.count("step-up requests", 3)
                await lock_everyone(superuser_engine, guard, clinic.id)
                before = await settings_of(superuser_engine, guard, clinic.id)
                refused = {}
                for name, caller in (
                    ("the API token", Credentials(owner.headers, {})),
                    ("a session logged in long ago", await _session(world, owner, LONG_AGO)),
                ):
                    body = dict(_variants(route, await body_for(world, owner, route, estate)))
                    rows = await rows_of(superuser_engine, clinic.id)
                    answer = await send(http, caller, route, url, body.get(variant))
                    kept = await rows_of(superuser_engine, clinic.id) == rows
                    now = await settings_of(superuser_engine, guard, clinic.id)
                    if now != before:
                        failures.append(f"{case}: {name} changed {_diff(before, now)}")
                    refused[name] = (answer, kept)
                body = dict(_variants(route, await body_for(world, owner, route, estate)))
                control = await send(
                    http, await _session(world, owner), route, url, body.get(variant)
                )
                after = await settings_of(superuser_engine, guard, clinic.id)
                security = {name for name in SETTINGS if after[name] != before[name]}
                changed |= security
                if not security:
                    continue
                for name, (answer, kept) in refused.items():
                    if problem(answer).get("type") != STEP_UP_REQUIRED or answer.status_code != 403:
                        failures.append(f"{case}: {name} got {explain(answer)}")
                    elif not kept:
                        failures.append(f"{case}: {name} was refused yet changed the clinic")
                if not control.is_success:
                    failures.append(f"{case}: the fresh session got {explain(control)}")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
    assert changed == set(STEP_UP.get(route.key, ())), (
        f"{route.label} changes {sorted(changed)}; catalogue.STEP_UP declares"
        f" {sorted(STEP_UP.get(route.key, ()))}"
    )
    if changed:
        refusals = (route.spec or {}).get("responses", {}).get("403", {})
        assert "step-up" in refusals.get("description", "").lower(), (
            f"{route.label} does not document its 403 step-up-required"
        )


def _diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{name}: {before[name]} -> {after[name]}"
        for name in SETTINGS
        if before[name] != after[name]
    )


async def test_a_log_in_without_a_second_factor_is_no_step_up(
    configured_app, world: World, superuser_engine: AsyncEngine
) -> None:
    """Only a log-in that passed a second factor steps up: an owner without one, just logged in
    with their password, is refused and changes nothing; logged in with a code, allowed."""
    clinic = await world.clinic((Role.technician,))
    email, target = clinic.owner.user.email, clinic.actors[Role.technician].user
    async with configured_app(**APP) as app, asgi_client(app) as http:

        async def promote() -> httpx.Response:
            return await http.patch(f"/api/v1/staff/{target.id}", json={"role": "admin"})

        assert (await login(http, email)).status_code == 200
        before = await rows_of(superuser_engine, clinic.id)
        refused = await promote()
        unchanged = await rows_of(superuser_engine, clinic.id) == before
        http.cookies.clear()
        authenticator = Authenticator(await world.enrol_mfa(clinic.owner.user))
        assert (await login(http, email, totp_code=authenticator.next_code())).status_code == 200
        allowed = await promote()

    assert_problem(refused, 403, "step-up-required")
    assert unchanged
    assert allowed.status_code == 200, allowed.text


async def test_switching_clinic_keeps_the_log_in_time(configured_app, world: World) -> None:
    """A session made by switching clinic continues the log-in it came from: switching does not
    turn an old log-in into a recent one."""
    here, there = await world.clinic(roles=()), await world.clinic(roles=())
    owner = here.owner
    async with world.session(there.id) as session:
        await add_member(session, owner.user, Role.owner)
    await world.enrol_mfa(owner.user)
    async with configured_app(**APP) as app, asgi_client(app) as http:
        http.cookies.update(browser.cookies(await world.login(owner, ago=LONG_AGO)))
        switched = await http.post("/api/v1/auth/switch", json={"clinic_id": str(there.id)})
        assert switched.status_code == 200, switched.text
        refused = await http.patch("/api/v1/clinics/current", json={"require_mfa": True})

    assert_problem(refused, 403, "step-up-required")
