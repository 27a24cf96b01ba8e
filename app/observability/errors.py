"""Error tracking: unexpected exceptions of the API, the job worker and CLI commands, reported to
Sentry (or a compatible server such as GlitchTip) through sentry-sdk, off unless
``VETIFY_SENTRY_DSN`` is set (docs/adr/0024-errors-and-dependency-health.md).

What is reported: an error logged with its exception at ERROR or above, which is how each of the
three meets an unexpected exception (app/kit/problems.py logs a 500's, procrastinate a job's last
failed try, the CLI an uncaught one through ``sys.excepthook``). Expected problems (4xx, a 503
while the database is away) are answered without such a record, so are never reported.

What is never sent: request headers that authenticate (the SDK's own list with ours), cookies,
bodies, query values, local variables, SQL parameters, breadcrumbs' data, log extras; and in what
is left, any text that looks like an email address, a phone number, a token or a URL password is
replaced. The user is the user's id only.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from app.kit import context
from app.kit.logs import REDACTED, SHOWN_PARAMETERS, redact_query
from app.settings import Settings

SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "set-cookie",
        "x-csrf-token",
        "stripe-signature",
        "proxy-authorization",
        "x-api-key",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
    }
)
"""Headers whose value is a credential or a client's address: dropped from a report."""
TAGS = ("request_id", "clinic_id", "route", "job_id", "queue", "task")
"""Fields of the request's or job's context that become tags (ids only, never personal data)."""

# Text an exception message or a log line may carry that must not leave the service.
_SCRUBBED = (
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # email addresses
    re.compile(r"(?<![\w-])\+?\d[\d ().-]{6,}\d"),  # phone numbers (and other long numbers)
    re.compile(r"(?i)\b(?:bearer|basic)\s+\S+"),  # an Authorization value
    re.compile(r"\b(?:vtk|sk|rk|pk|whsec)_[\w-]{8,}"),  # API tokens and Stripe keys
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]*(?=@)"),  # user:password in a URL
)


def release(settings: Settings) -> str:
    """``vetify@<version>``, and ``+<git sha>`` when the build says which commit it is."""
    try:
        number = version("vetify")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        number = "0+unknown"
    return f"vetify@{number}" + (f"+{settings.git_sha[:12]}" if settings.git_sha else "")


def configure(settings: Settings) -> bool:
    """Start reporting to the configured DSN; False, and nothing sent, without one. Each process
    calls it once (the API's workers, `vetify worker`, a CLI command)."""
    if settings.sentry_dsn is None:
        return False
    # The SDK is loaded only here: a process without a DSN never loads it (6 MiB of a worker).
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.fastapi import FastApiIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.starlette import StarletteIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.sentry_environment or settings.env.value,
        release=release(settings),
        traces_sample_rate=settings.sentry_traces_sample_rate,
        # What integrations may collect at all (the SDK's own switch; before_send scrubs again).
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "denylist", "terms": sorted(SENSITIVE_HEADERS)}},
            "http_bodies": [],
            "url_query_params": {"mode": "allowlist", "terms": sorted(SHOWN_PARAMETERS)},
            "database_query_data": False,
            "queues": False,
            "stack_frame_variables": False,
        },
        max_request_body_size="never",
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        integrations=[
            # The 500 is reported from its log record (below), inside the request: an HTTP
            # status alone is reported by none of them.
            StarletteIntegration(failed_request_status_codes=set()),
            FastApiIntegration(failed_request_status_codes=set()),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
            AsyncioIntegration(),
        ],
    )
    return True


def close() -> None:
    """Send what is queued (for a short-lived command) and stop reporting."""
    sdk = sys.modules.get("sentry_sdk")  # not loaded: nothing was ever configured
    if sdk is not None and sdk.get_client().is_active():
        sdk.get_client().close(timeout=2.0)


def scrub_event(event: Any, hint: Any) -> Any:
    """``before_send``: the event with the context's tags, without personal data or secrets."""
    found = context.current()
    if found is not None:
        fields = found.fields()
        tags = event.setdefault("tags", {})
        tags.update({name: str(fields[name]) for name in TAGS if name in fields})
        if found.user_id is not None:
            event["user"] = {"id": str(found.user_id)}
    if isinstance(event.get("transaction"), str) and event["transaction"].startswith("/"):
        event.setdefault("tags", {}).setdefault("route", event["transaction"])  # its template
    if "user" in event:
        event["user"] = {"id": event["user"]["id"]} if event["user"].get("id") else {}
    event.pop("extra", None)  # log records' extras: a job's arguments, among others
    event.pop("modules", None)
    request = event.get("request")
    if isinstance(request, dict):
        event["request"] = _scrubbed_request(request)
    for exception in (event.get("exception") or {}).get("values") or []:
        exception["value"] = scrubbed_text(exception.get("value"))
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    if isinstance(event.get("logentry"), dict):
        entry = event["logentry"]
        event["logentry"] = {
            "message": scrubbed_text(entry.get("formatted") or entry.get("message"))
        }
    if "message" in event:
        event["message"] = scrubbed_text(event["message"])
    breadcrumbs = event.get("breadcrumbs")
    if isinstance(breadcrumbs, dict):
        breadcrumbs["values"] = [scrub_breadcrumb(crumb) for crumb in breadcrumbs.get("values", [])]
    return event


def scrub_breadcrumb(crumb: Any, hint: Any = None) -> Any:
    """``before_breadcrumb``: the category, level and message (scrubbed), never its data (SQL
    parameters, HTTP URLs with query strings, log extras)."""
    crumb.pop("data", None)
    crumb["message"] = scrubbed_text(crumb.get("message"))
    return crumb


def _scrubbed_request(request: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {"method": request.get("method")}
    if isinstance(request.get("url"), str):
        kept["url"] = request["url"].partition("?")[0]
    if isinstance(request.get("query_string"), str) and request["query_string"]:
        kept["query_string"] = redact_query("?" + request["query_string"])[1:]
    headers = request.get("headers")
    if isinstance(headers, Mapping):
        kept["headers"] = {
            name: value for name, value in headers.items() if name.lower() not in SENSITIVE_HEADERS
        }
    return kept


def scrubbed_text(text: Any) -> Any:
    """``text`` with what looks like personal data or a secret replaced (anything not a string
    as it is)."""
    if not isinstance(text, str):
        return text
    for pattern in _SCRUBBED:
        text = pattern.sub(REDACTED, text)
    return text
