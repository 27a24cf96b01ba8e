"""Cross-site request forgery: a token bound to the session, and the request's origin.

A browser attaches cookies to requests any site makes, so a request authenticated by a cookie
proves nothing about who wrote it. Two checks close that:

* the token: derived from the session secret (so no key and no storage, and it changes with
  every session), readable by the service's own pages from a non-HttpOnly cookie, and echoed in
  a header, which another site can neither read nor set (signed double-submit);
* the origin: browsers state it on every unsafe request (``Origin``, else ``Referer``), and it
  must be the service's own or one it trusts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

CSRF_COOKIE = "vetify_csrf"
CSRF_HEADER = "X-CSRF-Token"
FORM_FIELD = "csrf_token"
"""Where a page's form, posted without JavaScript, sends the token (read into
``request.state`` under the same name before the caller is authenticated)."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def token_for(session_secret: str) -> str:
    digest = hashlib.sha256(b"vetify-csrf:" + session_secret.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_matches(session_secret: str, sent: str | None) -> bool:
    if not sent:
        return False
    return hmac.compare_digest(token_for(session_secret).encode(), sent.encode())


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, as browsers write ``Origin``; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def allowed_origins(public_url: str, trusted: Iterable[str]) -> frozenset[str]:
    return frozenset(o for o in (origin_of(u) for u in (public_url, *trusted)) if o)


def stated_origin(headers: Mapping[str, str]) -> str | None:
    """The origin the browser stated: ``Origin``, else the origin of ``Referer``.

    ``""`` when a header is there but names no usable origin (``Origin: null`` from a sandboxed
    frame or a redirect across sites); None when neither header was sent.
    """
    origin = headers.get("origin")
    if origin is not None:
        return origin_of(origin) or ""
    referer = headers.get("referer")
    if referer is not None:
        return origin_of(referer) or ""
    return None
