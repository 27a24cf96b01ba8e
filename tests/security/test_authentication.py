"""Every route under /api/v1 except signup, login and accepting an invitation refuses a caller
without valid credentials: 401, as problem+json, with a ``WWW-Authenticate`` challenge, and
nothing written. Forged credentials (random, tampered, of the right shape for the clinic, moved
to another clinic, with the other kind's prefix) and malformed ones (no token, no scheme, Basic,
empty, over-long, non-ASCII) are refused for both the bearer token and the session cookie, and a
forged bearer token is not rescued by a valid session beside it. A credential that once worked
(logged out, revoked, its member removed, expired, idle too long) is refused the same way.

Routes come from the OpenAPI document; path parameters are random UUIDs and bodies ``{}`` (the
credentials are checked before anything else, so neither may matter). A pull request tries each
route with three of the forged kinds and three of the dead ones, a different three per route so
that every kind meets routes (tests/harness/sweep.py); the nightly run tries every route with
every kind.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.auth.models import CredentialKind, Role
from app.auth.service import SESSION_COOKIE, SESSION_PREFIX, TOKEN_PREFIX
from app.kit import crypto
from app.kit.clock import utcnow
from fixtures.factories import CredentialFactory
from tests.harness import browser, sweep, tally
from tests.harness.api import PROBLEM_JSON, problem_type
from tests.harness.authenticator import Authenticator
from tests.harness.world import ClinicWorld, World
from tests.security.surface import Operation, census, protected_operations

OPERATIONS = protected_operations()
KINDS_PER_ROUTE = 3
UNAUTHENTICATED = {
    problem_type("unauthenticated"),
    problem_type("invalid-credentials"),
}


def _tampered(token: str) -> str:
    """A real token with its last character changed."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _other_clinic(token: str) -> str:
    """A real token's secret presented under another clinic's id."""
    prefix, _clinic, secret = token.split("_", 2)
    return f"{prefix}_{uuid.uuid4().hex}_{secret}"


def _moved(credential: str, clinic_id: uuid.UUID) -> str:
    """A real credential's secret presented under another (existing) clinic's id."""
    prefix, _clinic, secret = credential.split("_", 2)
    return f"{prefix}_{clinic_id.hex}_{secret}"


def _reprefixed(credential: str, prefix: str) -> str:
    return prefix + credential[credential.index("_") :]


def _random(prefix: str, clinic_id: uuid.UUID) -> str:
    """The right shape, naming a real clinic, with a secret nobody issued."""
    return f"{prefix}_{clinic_id.hex}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Keys:
    """Real credentials of the clinic under attack, and another clinic's id."""

    token: str
    session: str
    clinic: uuid.UUID
    other_clinic: uuid.UUID


# The raw Cookie header, where a value cannot go through a cookie jar (non-ASCII, over-long).
def _cookie_header(value: str | bytes) -> dict[str, str | bytes]:
    raw = value.encode() if isinstance(value, str) else value
    return {"Cookie": SESSION_COOKIE.encode() + b"=" + raw}


LONG = "A" * 8000
NON_ASCII = "vtk_ünïcødé_\u2603".encode()
# name -> (headers, cookies) built from the real credentials of the clinic under attack.
Credentials = Callable[[Keys], tuple[dict[str, Any], dict[str, str]]]
FORGERIES: dict[str, Credentials] = {
    "none": lambda k: ({}, {}),
    "random bearer token": lambda k: (
        {"Authorization": f"Bearer vtk_{uuid.uuid4().hex}_{secrets.token_urlsafe(32)}"},
        {},
    ),
    "bearer token of the right shape for the clinic, random secret": lambda k: (
        {"Authorization": f"Bearer {_random(TOKEN_PREFIX, k.clinic)}"},
        {},
    ),
    "tampered bearer token": lambda k: ({"Authorization": f"Bearer {_tampered(k.token)}"}, {}),
    "token moved to another clinic": lambda k: (
        {"Authorization": f"Bearer {_other_clinic(k.token)}"},
        {},
    ),
    "token moved to another existing clinic": lambda k: (
        {"Authorization": f"Bearer {_moved(k.token, k.other_clinic)}"},
        {},
    ),
    "token with the session prefix": lambda k: (
        {"Authorization": f"Bearer {_reprefixed(k.token, SESSION_PREFIX)}"},
        {},
    ),
    "session secret as a bearer token": lambda k: ({"Authorization": f"Bearer {k.session}"}, {}),
    "bearer garbage": lambda k: ({"Authorization": "Bearer ' OR '1'='1"}, {}),
    "empty bearer": lambda k: ({"Authorization": "Bearer "}, {}),
    "Bearer without a token": lambda k: ({"Authorization": "Bearer"}, {}),
    "empty Authorization": lambda k: ({"Authorization": ""}, {}),
    "token without a scheme": lambda k: ({"Authorization": k.token}, {}),
    "token under the Basic scheme": lambda k: ({"Authorization": f"Basic {k.token}"}, {}),
    "Basic user and password": lambda k: (
        {"Authorization": "Basic " + base64.b64encode(f"owner:{k.token}".encode()).decode()},
        {},
    ),
    "over-long bearer": lambda k: ({"Authorization": f"Bearer vtk_{k.clinic.hex}_{LONG}"}, {}),
    "non-ASCII bearer": lambda k: ({"Authorization": b"Bearer " + NON_ASCII}, {}),
    "forged bearer beside a valid session": lambda k: (
        {"Authorization": f"Bearer {_tampered(k.token)}"},
        {SESSION_COOKIE: k.session},
    ),
    "token as a session cookie": lambda k: ({}, {SESSION_COOKIE: k.token}),
    "random session cookie": lambda k: ({}, {SESSION_COOKIE: secrets.token_urlsafe(32)}),
    "session cookie of the right shape for the clinic, random secret": lambda k: (
        {},
        {SESSION_COOKIE: _random(SESSION_PREFIX, k.clinic)},
    ),
    "tampered session cookie": lambda k: ({}, {SESSION_COOKIE: _tampered(k.session)}),
    "session moved to another existing clinic": lambda k: (
        {},
        {SESSION_COOKIE: _moved(k.session, k.other_clinic)},
    ),
    "empty session cookie": lambda k: (_cookie_header(""), {}),
    "garbage session cookie": lambda k: ({}, {SESSION_COOKIE: "' OR '1'='1"}),
    "over-long session cookie": lambda k: (_cookie_header(f"vts_{k.clinic.hex}_{LONG}"), {}),
    "non-ASCII session cookie": lambda k: (_cookie_header(NON_ASCII), {}),
}


def test_the_surface_is_read_from_the_document() -> None:
    labels = {op.label for op in OPERATIONS}
    assert len(labels) > 40
    assert "GET /api/v1/pets" in labels
    assert not {"POST /api/v1/auth/signup", "POST /api/v1/auth/login"} & labels


def _routes_for(kind: str, kinds: list[str]) -> list[Operation]:
    """The protected routes that meet credentials of ``kind`` (one of ``kinds``) on this run."""
    meeting = [
        op
        for op in OPERATIONS
        if kind in sweep.members(kinds, "credentials", op.label, per_place=KINDS_PER_ROUTE)
    ]
    return meeting or [sweep.one(OPERATIONS, kind)]


async def _refusals(
    client: httpx.AsyncClient,
    headers: dict[str, Any],
    cookies: dict[str, str],
    operations: list[Operation],
) -> list[str]:
    """Each operation called with these credentials; what was not a proper 401."""
    failures = []
    for op in operations:
        client.cookies.clear()
        client.cookies.update(cookies)
        response = await client.request(
            op.method.upper(), op.url(), headers=headers, json={} if op.has_body else None
        )
        body = response.json() if response.headers.get("content-type") == PROBLEM_JSON else {}
        if not (
            response.status_code == 401
            and body.get("status") == 401
            and body.get("type") in UNAUTHENTICATED
            and response.headers.get("www-authenticate", "").startswith("Bearer")
        ):
            failures.append(
                f"{op.label}: {response.status_code} {response.headers.get('content-type')} "
                f"{response.text[:200]}"
            )
    return failures


tally.size(
    "credentials refused",
    f"{len(FORGERIES)} forged and malformed kinds x {len(OPERATIONS)} protected routes"
    + (
        ""
        if sweep.full()
        else f": {sum(len(_routes_for(k, list(FORGERIES))) for k in FORGERIES)} requests"
        f" ({KINDS_PER_ROUTE} kinds per route; every pair with VETIFY_SWEEP=full)"
    ),
)


def test_the_sample_is_over_kinds_never_over_routes() -> None:
    """On every run each route meets forged and dead credentials, and each kind meets routes."""
    for kinds in (list(FORGERIES), list(DEAD)):
        met = {kind: _routes_for(kind, kinds) for kind in kinds}
        assert all(met.values())
        assert {op.label for ops in met.values() for op in ops} == {op.label for op in OPERATIONS}


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_every_protected_route_refuses_forged_credentials(
    client: httpx.AsyncClient, world: World, superuser_engine, forgery: str
) -> None:
    clinic: ClinicWorld = await world.clinic(roles=(Role.owner,))
    other: ClinicWorld = await world.clinic(roles=(Role.owner,))
    keys = Keys(clinic.owner.token, await world.login(clinic.owner), clinic.id, other.id)
    headers, cookies = FORGERIES[forgery](keys)
    before = await census(superuser_engine)

    failures = await _refusals(client, headers, cookies, _routes_for(forgery, list(FORGERIES)))

    assert not failures, f"with credentials '{forgery}':\n" + "\n".join(failures)
    assert await census(superuser_engine) == before


# name -> how a once-valid credential of the clinic's vet stops working: (headers, cookies).
Killer = Callable[
    [httpx.AsyncClient, World, ClinicWorld], Awaitable[tuple[dict[str, str], dict[str, str]]]
]


async def _logged_out_token(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    assert (await client.post("/api/v1/auth/logout", headers=vet.headers)).status_code == 204
    return vet.headers, {}


async def _revoked_token(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    made = await client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=vet.headers)
    token = made.json()
    revoked = await client.delete(f"/api/v1/auth/tokens/{token['id']}", headers=vet.headers)
    assert revoked.status_code == 204
    return {"Authorization": f"Bearer {token['token']}"}, {}


async def _logged_out_session(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    cookies = browser.cookies(await world.login(clinic.actors[Role.vet]))
    client.cookies.update(cookies)
    assert (await client.post("/api/v1/auth/logout")).status_code == 204
    return {}, cookies


async def _removed_member(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    cookies = browser.cookies(await world.login(vet))
    removed = await client.delete(f"/api/v1/staff/{vet.user.id}", headers=clinic.owner.headers)
    assert removed.status_code == 204
    return vet.headers, cookies


async def _expired_token(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    secret, secret_hash = crypto.new_credential(TOKEN_PREFIX, clinic.id)
    await world.make(
        clinic,
        CredentialFactory,
        user_id=vet.user.id,
        secret_hash=secret_hash,
        expires_at=utcnow() - dt.timedelta(seconds=1),
    )
    return {"Authorization": f"Bearer {secret}"}, {}


async def _expired_session(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    secret, secret_hash = crypto.new_credential(SESSION_PREFIX, clinic.id)
    await world.make(
        clinic,
        CredentialFactory,
        user_id=vet.user.id,
        kind=CredentialKind.session,
        secret_hash=secret_hash,
        expires_at=utcnow() - dt.timedelta(seconds=1),
    )
    return {}, {SESSION_COOKIE: secret}


async def _idle_session(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    secret, secret_hash = crypto.new_credential(SESSION_PREFIX, clinic.id)
    idle = dt.timedelta(minutes=world.settings.session_idle_timeout_minutes, seconds=1)
    await world.make(
        clinic,
        CredentialFactory,
        user_id=vet.user.id,
        kind=CredentialKind.session,
        secret_hash=secret_hash,
        last_used_at=utcnow() - idle,
    )
    return {}, {SESSION_COOKIE: secret}


async def _session_after_role_change(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    cookies = browser.cookies(await world.login(vet))
    changed = await client.patch(
        f"/api/v1/staff/{vet.user.id}", json={"role": "technician"}, headers=clinic.owner.headers
    )
    assert changed.status_code == 200
    return {}, cookies


async def _session_before_mfa_on(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    old = browser.cookies(await world.login(vet))
    client.cookies.update(browser.cookies(await world.login(vet)))
    authenticator = Authenticator((await client.post("/api/v1/auth/mfa/totp")).json()["secret"])
    confirmed = await client.post(
        "/api/v1/auth/mfa/totp/confirm", json={"code": authenticator.next_code()}
    )
    assert confirmed.status_code == 200
    client.cookies.clear()
    return {}, old


async def _session_before_mfa_off(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    authenticator = Authenticator(await world.enrol_mfa(vet.user))
    old = browser.cookies(await world.login(vet))
    client.cookies.update(browser.cookies(await world.login(vet)))
    disabled = await client.post(
        "/api/v1/auth/mfa/totp/disable", json={"code": authenticator.next_code()}
    )
    assert disabled.status_code == 200
    client.cookies.clear()
    return {}, old


async def _logged_out_everywhere(client: httpx.AsyncClient, world: World, clinic: ClinicWorld):
    vet = clinic.actors[Role.vet]
    cookies = browser.cookies(await world.login(vet))
    client.cookies.update(browser.cookies(await world.login(vet)))
    assert (await client.post("/api/v1/auth/logout-everywhere")).status_code == 204
    client.cookies.clear()
    return vet.headers, cookies


DEAD: dict[str, Killer] = {
    "token used to log out": _logged_out_token,
    "token revoked by id": _revoked_token,
    "session logged out": _logged_out_session,
    "removed member's token and session": _removed_member,
    "expired token": _expired_token,
    "expired session": _expired_session,
    "session idle too long": _idle_session,
    "session from before a role change": _session_after_role_change,
    "session from before MFA was turned on": _session_before_mfa_on,
    "session from before MFA was turned off": _session_before_mfa_off,
    "token and another session after logout everywhere": _logged_out_everywhere,
}


@pytest.mark.parametrize("how", list(DEAD))
async def test_a_dead_credential_is_refused_everywhere(
    client: httpx.AsyncClient, world: World, superuser_engine, how: str
) -> None:
    clinic: ClinicWorld = await world.clinic(roles=(Role.owner, Role.vet))
    headers, cookies = await DEAD[how](client, world, clinic)
    before = await census(superuser_engine)

    failures = []
    for only_headers, only_cookies in ((headers, {}), ({}, cookies)):
        if only_headers or only_cookies:
            failures += await _refusals(
                client, only_headers, only_cookies, _routes_for(how, list(DEAD))
            )

    assert not failures, f"with a {how}:\n" + "\n".join(failures)
    assert await census(superuser_engine) == before
