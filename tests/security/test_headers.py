"""Browser protections on every answer: the security headers on every route of the document
(and on the docs, the document itself, 404s, 405s, 413s and 429s), HSTS only over HTTPS
(directly or from a trusted proxy), the docs' nonce, and CORS closed unless configured.
"""

from __future__ import annotations

import re

import httpx
import pytest

from app.kit.headers import API_POLICY, DOWNLOAD_POLICY, HSTS
from tests.harness.api import signup
from tests.harness.plugin import asgi_client
from tests.security.surface import api_operations

REQUIRED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def assert_protected(response: httpx.Response, *, https: bool = True) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    for name, value in REQUIRED.items():
        assert response.headers.get(name) == value, f"{where}: {name}"
    assert "camera=()" in response.headers.get("permissions-policy", ""), where
    policy = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, where
    assert "unsafe-inline" not in policy, where
    assert "unsafe-eval" not in policy, where
    if https:
        assert response.headers.get("strict-transport-security") == HSTS, where
    else:
        assert "strict-transport-security" not in response.headers, where


@pytest.mark.parametrize("operation", api_operations(), ids=lambda op: op.label)
async def test_every_route_answers_with_the_security_headers(
    operation, module_client, module_world
):
    # One app for the module: each test's clinic is its own, and a request is all it sends.
    clinic = await module_world.clinic()
    response = await module_client.request(
        operation.method,
        operation.url(),
        headers=clinic.owner.headers,
        json={} if operation.has_body else None,
    )
    assert_protected(response)
    if not response.headers.get("content-type", "").startswith("text/html"):
        # (or, for a file, the same in a sandbox: the audit trail's export)
        assert response.headers["content-security-policy"] in {API_POLICY, DOWNLOAD_POLICY}


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/openapi.json", 200),
        ("GET", "/health/live", 200),
        ("GET", "/health/ready", 200),
        ("GET", "/docs/static/swagger-ui-bundle.js", 200),
        ("GET", "/no/such/page", 404),
        ("DELETE", "/api/v1/auth/me", 405),
        ("GET", "/api/v1/pets", 401),
    ],
)
async def test_answers_outside_the_routes_carry_them_too(client, method, path, status):
    response = await client.request(method, path)
    assert response.status_code == status
    assert_protected(response)


async def test_the_docs_page_runs_only_its_own_nonced_script(client):
    first, second = await client.get("/docs"), await client.get("/docs")
    assert_protected(first)
    policy = first.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce, policy
    assert "script-src 'self' 'nonce-" in policy
    scripts = re.findall(r"<script([^>]*)>", first.text)
    inline = [attrs for attrs in scripts if "src=" not in attrs]
    assert inline == [f' nonce="{nonce.group(1)}"']
    # A nonce used twice is no nonce: each page gets its own.
    assert nonce.group(1) not in second.headers["content-security-policy"]


async def test_413_and_429_answers_carry_them(configured_app):
    async with (
        configured_app(rate_limit_scale=1, rate_limit_signup="1/hour", max_body_bytes=1024) as app,
        asgi_client(app, client_ip="203.0.113.9") as http,
    ):
        await signup(http, {})
        limited = await signup(http, {})
        too_large = await http.post("/api/v1/customers", content=b"x" * 2048)
    assert limited.status_code == 429
    assert too_large.status_code == 413
    assert_protected(limited)
    assert_protected(too_large)


async def test_hsts_only_over_https_or_from_a_trusted_tls_proxy(configured_app):
    proxy = "203.0.113.10"
    async with configured_app(trusted_proxies=[proxy]) as app:
        async with asgi_client(app, base_url="http://testserver") as http:
            plain = await http.get("/health/live")
            # Anyone can write the header; only the proxy is believed.
            forged = await http.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        async with asgi_client(app, client_ip=proxy, base_url="http://testserver") as http:
            terminated = await http.get("/health/live", headers={"X-Forwarded-Proto": "https"})
    assert_protected(plain, https=False)
    assert_protected(forged, https=False)
    assert_protected(terminated, https=True)


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_cors_is_closed_by_default(client, world):
    clinic = await world.clinic()
    evil = {"Origin": "https://evil.example"}
    preflight = await client.options("/api/v1/customers", headers={**evil, **PREFLIGHT})
    simple = await client.get("/api/v1/customers", headers={**evil, **clinic.owner.headers})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-credentials" not in simple.headers


async def test_cors_allows_exactly_the_configured_origins(configured_app, world):
    clinic = await world.clinic()
    allowed = "https://app.vetify.example"
    async with (
        configured_app(cors_allow_origins=[allowed]) as app,
        asgi_client(app) as http,
    ):
        ok = await http.options("/api/v1/customers", headers={"Origin": allowed, **PREFLIGHT})
        read = await http.get(
            "/api/v1/customers", headers={"Origin": allowed, **clinic.owner.headers}
        )
        evil = await http.options(
            "/api/v1/customers", headers={"Origin": "https://app.vetify.example.evil", **PREFLIGHT}
        )
    assert ok.headers["access-control-allow-origin"] == allowed
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert read.headers["access-control-allow-origin"] == allowed
    assert "ratelimit" in read.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in evil.headers


@pytest.mark.parametrize("origin", ["*", "null", "app.example.com", "https://a.example/path"])
def test_a_wildcard_or_malformed_cors_origin_is_refused_at_start_up(settings, origin):
    from app.settings import ConfigurationError, Settings

    with pytest.raises(ConfigurationError, match="CORS_ALLOW_ORIGINS"):
        Settings(**{**dict(settings), "cors_allow_origins": [origin]})
