"""Cross-site request forgery against every route a session cookie can call.

For every unsafe route (POST, PUT, PATCH, DELETE) in the route table, a logged-in owner's
browser is made to send the request as another site would: with both cookies (a browser
attaches them), but without the CSRF token header, with a wrong one, with the token of
another of the owner's own sessions, without Origin or Referer, with a foreign Origin, a
foreign Referer, or ``Origin: null``. Each must be a 403 problem+json of type .../csrf and
change nothing in the database; then the same request with the token and our Origin succeeds,
so the refusals are the protection and not a broken request.

The client here is bare: it adds nothing of its own (the ``client`` fixture acts as the
service's web page and would add the token).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.models import Role
from app.kit import csrf
from app.main import create_app
from app.settings import Settings
from fixtures.clinics import add_member
from tests.harness import browser, tally
from tests.harness.api import login, problem_type
from tests.harness.authenticator import Authenticator
from tests.harness.world import World
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    Credentials,
    Route,
    body_for,
    explain,
    problem,
    send,
)
from tests.security.estate import Estate, fresh
from tests.security.surface import census

UNSAFE = [r for r in ATTACKED if r.method not in csrf.SAFE_METHODS and not r.public]
CSRF = problem_type("csrf")
EVIL = "https://evil.example"


def _tampered(token: str) -> str:
    """The token with its last character changed (always changed)."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


# name -> the headers the forged request carries, given (our origin, token, other token)
ATTACKS: dict[str, Any] = {
    "no token": lambda ours, token, other: {"Origin": ours},
    "wrong token": lambda ours, token, other: {"Origin": ours, "X-CSRF-Token": _tampered(token)},
    "empty token": lambda ours, token, other: {"Origin": ours, "X-CSRF-Token": ""},
    "token of another session": lambda ours, token, other: {"Origin": ours, "X-CSRF-Token": other},
    "no Origin or Referer": lambda ours, token, other: {"X-CSRF-Token": token},
    "foreign Origin": lambda ours, token, other: {"Origin": EVIL, "X-CSRF-Token": token},
    "Origin null": lambda ours, token, other: {"Origin": "null", "X-CSRF-Token": token},
    "foreign Referer": lambda ours, token, other: {
        "Referer": f"{EVIL}/page",
        "X-CSRF-Token": token,
    },
    "our Referer under a foreign Origin": lambda ours, token, other: {
        "Origin": EVIL,
        "Referer": f"{ours}/page",
        "X-CSRF-Token": token,
    },
    "lookalike Origin": lambda ours, token, other: {
        "Origin": ours + ".evil.example",
        "X-CSRF-Token": token,
    },
}

tally.size(
    "csrf",
    f"{len(UNSAFE)} unsafe routes x {len(ATTACKS)} forgeries + 1 genuine request each",
)


@pytest.fixture
async def bare(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


def test_the_unsafe_routes_are_read_from_the_route_table() -> None:
    labels = {route.label for route in UNSAFE}
    assert len(labels) > 20
    assert {"POST /api/v1/pets", "POST /api/v1/auth/logout", "PATCH /api/v1/clinics/current"} <= (
        labels
    )


@pytest.mark.parametrize("route", UNSAFE, ids=lambda r: r.label)
async def test_forged_cookie_requests_are_refused_and_change_nothing(
    bare: httpx.AsyncClient,
    world: World,
    superuser_engine,
    settings: Settings,
    estates: tuple[Estate, Estate],
    route: Route,
) -> None:
    estate, _ = estates
    clinic = estate.clinic
    owner = clinic.owner
    ids = {ID_KINDS[n]: await fresh(world, clinic, ID_KINDS[n], owner) for n in route.path_params}
    # A route that may change a security setting is called as a step-up would be.
    secret = await (world.step_up(owner) if route.steps_up else world.login(owner))
    other = await world.login(owner)
    ours = csrf.origin_of(settings.public_url)
    token = csrf.token_for(secret)
    body = await body_for(world, owner, route, estate)
    cookie = Credentials({}, browser.cookies(secret))
    before = await census(superuser_engine)

    failures = []
    for name, forge in ATTACKS.items():
        headers = forge(ours, token, csrf.token_for(other))
        response = await send(bare, cookie, route, route.url(ids), body, headers=headers)
        if response.status_code != 403 or problem(response).get("type") != CSRF:
            failures.append(f"{name}: {explain(response)}")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
    assert await census(superuser_engine) == before
    genuine = await send(
        bare, cookie, route, route.url(ids), body, headers={"Origin": ours, "X-CSRF-Token": token}
    )
    assert genuine.is_success, f"{route.label} with the token and our Origin: {explain(genuine)}"


async def test_a_same_origin_referer_stands_in_for_a_missing_origin(
    bare: httpx.AsyncClient, world: World, settings: Settings
) -> None:
    clinic = await world.clinic(roles=())
    secret = await world.login(clinic.owner)
    bare.cookies.update(browser.cookies(secret))

    response = await bare.post(
        "/api/v1/auth/tokens",
        json={"name": "from a page"},
        headers={
            "Referer": f"{settings.public_url}/some/page",
            "X-CSRF-Token": csrf.token_for(secret),
        },
    )

    assert response.status_code == 201, response.text


async def test_bearer_tokens_need_no_csrf_token_or_origin(
    bare: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic(roles=())
    response = await bare.post(
        "/api/v1/auth/tokens", json={"name": "script"}, headers=clinic.owner.headers
    )
    assert response.status_code == 201


async def test_the_token_comes_with_the_session_and_changes_with_it(
    bare: httpx.AsyncClient, world: World, settings: Settings
) -> None:
    clinic = await world.clinic(roles=())
    first = await login(bare, clinic.setup.owner.email)
    second = await login(bare, clinic.setup.owner.email)

    for logged_in in (first, second):
        session = logged_in.cookies["vetify_session"]
        assert logged_in.json()["csrf_token"] == logged_in.cookies["vetify_csrf"]
        assert logged_in.json()["csrf_token"] == csrf.token_for(session)
    assert first.json()["csrf_token"] != second.json()["csrf_token"]


# -- login CSRF ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{"Origin": EVIL}, {"Origin": "null"}, {"Referer": f"{EVIL}/login"}],
    ids=["foreign Origin", "Origin null", "foreign Referer"],
)
async def test_login_from_another_site_is_refused(
    bare: httpx.AsyncClient, world: World, superuser_engine, headers: dict[str, str]
) -> None:
    clinic = await world.clinic(roles=())
    before = await census(superuser_engine)

    response = await login(bare, clinic.setup.owner.email, headers=headers)

    assert response.status_code == 403
    assert problem(response)["type"] == CSRF
    assert "set-cookie" not in response.headers
    assert await census(superuser_engine) == before


@pytest.mark.parametrize("origin", ["ours", None], ids=["our Origin", "no Origin (a script)"])
async def test_login_from_our_pages_or_a_script_works(
    bare: httpx.AsyncClient, world: World, settings: Settings, origin: str | None
) -> None:
    clinic = await world.clinic(roles=())
    headers = {"Origin": str(csrf.origin_of(settings.public_url))} if origin else {}
    response = await login(bare, clinic.setup.owner.email, headers=headers)
    assert response.status_code == 200


async def test_a_trusted_origin_is_accepted(world: World, settings: Settings) -> None:
    trusting = settings.model_copy(update={"cors_allow_origins": ["https://app.vetify.example"]})
    app = create_app(trusting)
    clinic = await world.clinic(roles=())
    secret = await world.login(clinic.owner)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            http.cookies.update(browser.cookies(secret))
            token = {"X-CSRF-Token": csrf.token_for(secret)}
            trusted = await http.post(
                "/api/v1/auth/tokens",
                json={"name": "a"},
                headers={"Origin": "https://app.vetify.example", **token},
            )
            other = await http.post(
                "/api/v1/auth/tokens",
                json={"name": "b"},
                headers={"Origin": "https://other.vetify.example", **token},
            )
    assert trusted.status_code == 201
    assert other.status_code == 403


# -- the cookies themselves ------------------------------------------------------------------
async def test_every_cookie_the_service_sets_is_same_site_strict(
    client: httpx.AsyncClient, world: World
) -> None:
    """Login, switch, enabling MFA, logout and logout-everywhere: each Set-Cookie header."""

    clinic, other = await world.clinic(roles=()), await world.clinic(roles=())
    async with world.session(other.id) as session:
        await add_member(session, clinic.setup.owner, Role.vet)
    owner, clinic_id = clinic.setup.owner.email, str(clinic.id)
    responses = [await login(client, owner, clinic_id=clinic_id)]
    responses.append(await client.post("/api/v1/auth/switch", json={"clinic_id": str(clinic.id)}))
    started = await client.post("/api/v1/auth/mfa/totp")
    authenticator = Authenticator(started.json()["secret"])
    responses.append(
        await client.post("/api/v1/auth/mfa/totp/confirm", json={"code": authenticator.next_code()})
    )
    responses.append(await client.post("/api/v1/auth/logout"))
    with_code = await login(client, owner, clinic_id=clinic_id, totp_code=authenticator.next_code())
    responses += [with_code, await client.post("/api/v1/auth/logout-everywhere")]

    set_cookies = [c for r in responses for c in r.headers.get_list("set-cookie")]
    assert all(r.is_success for r in responses), [explain(r) for r in responses]
    assert len(set_cookies) == 2 * len(responses)
    for header in set_cookies:
        attributes = {part.strip().lower() for part in header.split(";")}
        assert "samesite=strict" in attributes, header
        assert "secure" in attributes, header
        assert "path=/" in attributes, header
        assert ("httponly" in attributes) == header.startswith("vetify_session="), header


# -- what a refusal says ---------------------------------------------------------------------------
SEND_ORIGIN = (
    "Send Origin (or Referer) naming this service's origin with requests made with the session"
    " cookie."
)
SEND_TOKEN = (
    f"Send the session's CSRF token (the {csrf.CSRF_COOKIE} cookie, or csrf_token from the login"
    f" response) in the {csrf.CSRF_HEADER} header (a page's form: in its {csrf.FORM_FIELD}"
    " field)."
)
SAYS = {name: SEND_TOKEN if "token" in name else SEND_ORIGIN for name in ATTACKS}


@pytest.mark.mutation_targets(
    "app/auth/deps.py::_refuse_forgery", "app/auth/deps.py::same_site_login"
)
async def test_each_refusal_says_what_the_page_must_send(
    bare: httpx.AsyncClient, world: World, settings: Settings
) -> None:
    """A developer whose page is refused reads why: the origin to state, or the token to send
    and where it comes from; a login from another site, where to log in."""
    clinic = await world.clinic(roles=())
    secret = await world.login(clinic.owner)
    other = await world.login(clinic.owner)
    ours = csrf.origin_of(settings.public_url)
    bare.cookies.update(browser.cookies(secret))
    said = {}
    for name, forge in ATTACKS.items():
        headers = forge(ours, csrf.token_for(secret), csrf.token_for(other))
        response = await bare.post("/api/v1/auth/tokens", json={"name": name}, headers=headers)
        said[name] = problem(response).get("detail")
    assert said == SAYS
    bare.cookies.clear()
    login_elsewhere = await login(bare, clinic.setup.owner.email, headers={"Origin": EVIL})
    assert problem(login_elsewhere)["detail"] == "Log in from this service's own pages."
