"""Every route under /api/v1 except signup, login and accepting an invitation refuses a caller
without valid credentials: 401, as problem+json, with a ``WWW-Authenticate`` challenge, and
nothing written.

Routes come from the OpenAPI document; path parameters are random UUIDs and bodies ``{}`` (the
credentials are checked before anything else, so neither may matter).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable

import httpx
import pytest

from app.auth.service import SESSION_COOKIE
from tests.harness.world import ClinicWorld, World
from tests.security.surface import PROBLEM, census, protected_operations

OPERATIONS = protected_operations()
UNAUTHENTICATED = {
    "https://vetify.dev/problems/unauthenticated",
    "https://vetify.dev/problems/invalid-credentials",
}


def _tampered(token: str) -> str:
    """A real token with its last character changed."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _other_clinic(token: str) -> str:
    """A real token's secret presented under another clinic's id."""
    prefix, _clinic, secret = token.split("_", 2)
    return f"{prefix}_{uuid.uuid4().hex}_{secret}"


# name -> (headers, cookies) built from a real owner token of the clinic under attack.
Credentials = Callable[[str], tuple[dict[str, str], dict[str, str]]]
FORGERIES: dict[str, Credentials] = {
    "none": lambda token: ({}, {}),
    "random bearer token": lambda token: (
        {"Authorization": f"Bearer vtk_{uuid.uuid4().hex}_{secrets.token_urlsafe(32)}"},
        {},
    ),
    "tampered bearer token": lambda token: ({"Authorization": f"Bearer {_tampered(token)}"}, {}),
    "token moved to another clinic": lambda token: (
        {"Authorization": f"Bearer {_other_clinic(token)}"},
        {},
    ),
    "bearer garbage": lambda token: ({"Authorization": "Bearer ' OR '1'='1"}, {}),
    "empty bearer": lambda token: ({"Authorization": "Bearer "}, {}),
    "token as a session cookie": lambda token: ({}, {SESSION_COOKIE: token}),
    "random session cookie": lambda token: ({}, {SESSION_COOKIE: secrets.token_urlsafe(32)}),
}


def test_the_surface_is_read_from_the_document() -> None:
    labels = {op.label for op in OPERATIONS}
    assert len(labels) > 40
    assert "GET /api/v1/pets" in labels
    assert not {"POST /api/v1/auth/signup", "POST /api/v1/auth/login"} & labels


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_every_protected_route_refuses_forged_credentials(
    client: httpx.AsyncClient, world: World, superuser_engine, forgery: str
) -> None:
    clinic: ClinicWorld = await world.clinic()
    headers, cookies = FORGERIES[forgery](clinic.owner.token)
    before = await census(superuser_engine)

    failures = []
    for op in OPERATIONS:
        client.cookies.clear()
        client.cookies.update(cookies)
        response = await client.request(
            op.method.upper(), op.url(), headers=headers, json={} if op.has_body else None
        )
        body = response.json() if response.headers.get("content-type") == PROBLEM else {}
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

    assert not failures, f"with credentials '{forgery}':\n" + "\n".join(failures)
    assert await census(superuser_engine) == before
