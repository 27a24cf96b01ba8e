"""Log records without the personal data a URL or a dependency's client can carry, and each
error logged once.

The access log (app/observability/requests.py) writes each request's path and query string, and
a query string holds what a client searched for: names, email addresses, phone numbers
(``GET /api/v1/customers?q=...``).
Every query value is redacted but for parameters that never carry personal data; a parameter's
name is kept when it looks like one, so the line still says what was asked.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
"""What stands for a value; brackets, which a client's URL would have percent-encoded."""
SHOWN_PARAMETERS = frozenset({"limit", "cursor"})
"""Parameters logged as sent: a page size, and a page cursor (row ids only: kit/pagination)."""
_PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_LOGGED = "_vetify_logged"
CLIENT_LOGGERS = ("botocore", "s3transfer", "urllib3", "stripe", "httpx", "httpcore", "hpack")
"""The clients of the service's dependencies, which log at DEBUG what they send, in messages no
redaction parses: botocore the signed request (its access key id), the Stripe SDK each call's
parameters (a customer's email), the HTTP stacks under them their headers."""


def hold_clients_at_info() -> None:
    """:data:`CLIENT_LOGGERS` make no record below INFO, whatever the service's own level
    (``VETIFY_LOG_LEVEL=DEBUG`` included): called where every command sets up its logging
    and where an app starts (under another ASGI server, the app is all of Vetify it runs)."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def mark_logged(exc: BaseException) -> None:
    """``exc`` is logged, with its request's context: the server's own report of it when it
    leaves the app (uvicorn's "Exception in ASGI application", without that context) would
    only repeat it, and is dropped (app/observability/logs.py)."""
    setattr(exc, _LOGGED, True)


def logged_before(exc: BaseException) -> bool:
    return bool(getattr(exc, _LOGGED, False))


def redact_query(target: str) -> str:
    """A request's path and query string, every query value redacted but the shown ones'."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    return f"{path}?{'&'.join(_redact(pair) for pair in query.split('&'))}"


def _redact(pair: str) -> str:
    name, equals, _value = pair.partition("=")
    if not pair or name in SHOWN_PARAMETERS:
        return pair
    if not equals:  # a value alone
        return REDACTED
    return f"{name if _PARAMETER_NAME.fullmatch(name) else REDACTED}={REDACTED}"
