"""Talking to the API as a client does: signing up, logging in, and what a problem looks like.

Each helper builds its request once (``*_request``: the keyword arguments of ``client.post``)
and has an async form for ``httpx.AsyncClient`` and a ``*_sync`` form for ``httpx.Client``.
They return the response untouched: the caller asserts what its test is about.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from app.auth.service import SESSION_COOKIE
from app.kit.csrf import CSRF_HEADER
from app.kit.problems import MEDIA_TYPE, PROBLEM_BASE
from fixtures.factories import DEFAULT_PASSWORD

SIGNUP_PATH = "/api/v1/auth/signup"
LOGIN_PATH = "/api/v1/auth/login"
PROBLEM_JSON = MEDIA_TYPE
"""The content type of every error the API returns."""

# pragma: allowlist nextline secret - the signed-up owner's made-up passphrase
SIGNUP_PASSWORD = "a long enough passphrase"
"""The owner's password in :func:`signup_body` (the factories' users have DEFAULT_PASSWORD)."""


def signup_body(**fields: object) -> dict[str, object]:
    """A valid sign-up: a new clinic whose owner has an email no other test uses."""
    return {
        "clinic_name": "Harbour Vets",
        "location_name": "Main",
        "timezone": "Europe/Lisbon",
        "owner_name": "Rita Costa",
        "email": f"owner-{uuid.uuid4().hex[:12]}@example.com",
        "password": SIGNUP_PASSWORD,
        **fields,
    }


def signup_request(body: Mapping[str, object] | None = None, **fields: object) -> dict[str, Any]:
    """The sign-up post: ``body`` as given (default :func:`signup_body`), ``fields`` over it."""
    return {"url": SIGNUP_PATH, "json": {**(signup_body() if body is None else body), **fields}}


async def signup(
    client: httpx.AsyncClient, body: Mapping[str, object] | None = None, **fields: object
) -> httpx.Response:
    """POST the sign-up (see :func:`signup_request`)."""
    return await client.post(**signup_request(body, **fields))


def signup_sync(
    client: httpx.Client, body: Mapping[str, object] | None = None, **fields: object
) -> httpx.Response:
    return client.post(**signup_request(body, **fields))


def login_request(
    email: str,
    password: str = DEFAULT_PASSWORD,
    *,
    totp_code: str | None = None,
    headers: Mapping[str, str] | None = None,
    **fields: object,
) -> dict[str, Any]:
    """The log-in post: email and password, the TOTP or recovery code if given, any other body
    ``fields`` (``clinic_id``), and extra request ``headers``."""
    body: dict[str, object] = {"email": email, "password": password, **fields}
    if totp_code is not None:
        body["totp_code"] = totp_code
    request: dict[str, Any] = {"url": LOGIN_PATH, "json": body}
    if headers is not None:
        request["headers"] = dict(headers)
    return request


async def login(
    client: httpx.AsyncClient, email: str, password: str = DEFAULT_PASSWORD, **options: Any
) -> httpx.Response:
    """POST a log-in; ``options`` as for :func:`login_request`."""
    return await client.post(**login_request(email, password, **options))


def login_sync(
    client: httpx.Client, email: str, password: str = DEFAULT_PASSWORD, **options: Any
) -> httpx.Response:
    return client.post(**login_request(email, password, **options))


def token_by_session_sync(
    client: httpx.Client, login: httpx.Response, origin: str, name: str
) -> httpx.Response:
    """Create an API token with the session ``login`` set, as the service's own page at
    ``origin`` would: the cookie (sent by hand: it is Secure, and a local server speaks plain
    http), ``Origin`` and the CSRF token."""
    client.cookies.clear()
    return client.post(
        "/api/v1/auth/tokens",
        json={"name": name},
        headers={
            "Cookie": f"{SESSION_COOKIE}={login.cookies[SESSION_COOKIE]}",
            "Origin": origin,
            CSRF_HEADER: login.json()["csrf_token"],
        },
    )


def shared_part(body: Any) -> Any:
    """What two answers can have in common: a body less its own request's ``request_id``
    (echoed in every problem+json body), to compare one request's answer with another's."""
    if isinstance(body, dict):
        return {key: value for key, value in body.items() if key != "request_id"}
    return body


def problem_type(slug: str) -> str:
    """A problem's ``type``: ``https://vetify.dev/problems/<slug>``."""
    return PROBLEM_BASE + slug


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """``response`` is the problem ``slug`` with ``status``, as problem+json: its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == problem_type(slug), body
    assert body["status"] == status, body
    assert isinstance(body["title"], str), body
    assert body["title"], body
    return body
