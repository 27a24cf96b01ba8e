"""Security headers on every response, whatever produced it (a route, a problem, a middleware).

Two Content-Security-Policies: API answers (JSON, files) may load nothing and be framed by
nobody; HTML pages (the API docs now, the web UI later) may load this origin's scripts and
styles, plus inline ones carrying the request's nonce (``request.state.csp_nonce``), never
``unsafe-inline``. A response that sets its own policy (a download's ``sandbox``) keeps it.

``Strict-Transport-Security`` is sent only over HTTPS: directly, or behind a trusted proxy
that says so in ``X-Forwarded-Proto`` (see ``trusted_proxies``); over plain HTTP it would be
ignored by browsers and wrongly promise HTTPS in tests and local runs.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NONCE_KEY = "csp_nonce"
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOWNLOAD_POLICY = API_POLICY + "; sandbox"
"""A file the API answers with (an export): if a browser opens it anyway, in a sandbox too."""
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": (
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
        "microphone=(), payment=(), usb=(), interest-cohort=()"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


NO_CONTENT = (204, 304)
"""Statuses whose answers have no content, so name no content type."""


def nonce(scope: Scope) -> str:
    """This request's CSP nonce, for an inline ``<script nonce=...>`` of an HTML page."""
    value: str = scope["state"][NONCE_KEY]
    return value


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})[NONCE_KEY] = request_nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers.setdefault(name, value)
                if "content-security-policy" not in headers:
                    html = headers.get("content-type", "").startswith("text/html")
                    headers["Content-Security-Policy"] = (
                        PAGE_POLICY.format(nonce=request_nonce) if html else API_POLICY
                    )
                # Clinical data must not linger in shared or browser caches.
                headers.setdefault("Cache-Control", "no-store")
                if message["status"] in NO_CONTENT:
                    # Nothing to read as a type (RFC 9110, 6.4.1); FastAPI names its default
                    # response class's (JSON) on a 204 all the same.
                    del headers["content-type"]
                if scope.get("scheme") == "https":
                    headers["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, send_with_headers)
