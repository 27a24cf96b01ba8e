"""What a browser showing the service's own pages adds to a request, and no more.

The browser states the page's origin (``Origin``) on every unsafe request; the page's script
reads the CSRF token from the ``vetify_csrf`` cookie and echoes it in ``X-CSRF-Token``
(ADR 0009). The ``client`` fixture does both, so cookie-authenticated tests pass the CSRF
protection the way the real front end will, with nothing switched off. A test that sets either
header itself keeps its own value; tests/security/test_csrf.py attacks without this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

import httpx

from app.auth.service import SESSION_COOKIE
from app.kit import csrf
from app.settings import Settings


def page_of(public_url: str) -> Callable[[httpx.Request], Awaitable[None]]:
    origin = csrf.origin_of(public_url)
    assert origin is not None, public_url

    async def add_what_the_page_sends(request: httpx.Request) -> None:
        if request.method in csrf.SAFE_METHODS:
            return
        request.headers.setdefault("Origin", origin)
        jar = SimpleCookie()
        jar.load(request.headers.get("cookie", ""))
        if csrf.CSRF_COOKIE in jar:
            request.headers.setdefault(csrf.CSRF_HEADER, jar[csrf.CSRF_COOKIE].value)

    return add_what_the_page_sends


def cookies(session_secret: str) -> dict[str, str]:
    """The cookies a browser holds after logging in: the session and its CSRF token."""
    return {SESSION_COOKIE: session_secret, csrf.CSRF_COOKIE: csrf.token_for(session_secret)}


def cookie_header(session_secret: str) -> dict[str, str]:
    """Those cookies as the ``Cookie`` header of one request; the client's jar stays as it is."""
    return {
        "Cookie": "; ".join(f"{name}={value}" for name, value in cookies(session_secret).items())
    }


def headers(settings: Settings, session_secret: str) -> dict[str, str]:
    """What the page sends besides the cookies on an unsafe request (for hand-made clients)."""
    origin = csrf.origin_of(settings.public_url)
    assert origin is not None
    return {"Origin": origin, csrf.CSRF_HEADER: csrf.token_for(session_secret)}


def navigation_of(public_url: str) -> Callable[[httpx.Request], Awaitable[None]]:
    """A browser on the web app's pages with JavaScript off: it states its origin on a form's
    POST; the CSRF token goes only where the page put it (the form)."""
    origin = csrf.origin_of(public_url)
    assert origin is not None, public_url

    async def add_what_the_browser_sends(request: httpx.Request) -> None:
        if request.method not in csrf.SAFE_METHODS:
            request.headers.setdefault("Origin", origin)

    return add_what_the_browser_sends


NAVIGATION = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
"""What a browser asks for when it opens a page."""
