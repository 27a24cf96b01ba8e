"""What a log line, an error report, a metric or a span knows about the work it belongs to.

One :class:`Context` per request (bound by the outermost middleware) or per job (bound by the
queue's runner), held in a context variable so that code anywhere below reads it without being
passed it. It is mutable on purpose: authentication learns the clinic and the user after the
request began, and FastAPI runs a sync dependency in a thread on a *copy* of the context, which
still refers to the same object.

It holds identifiers, never personal data (no email, name or token), with two exceptions kept
out of :meth:`Context.fields` (so out of logs, tags and attributes): where a request came from,
``client_ip`` and ``user_agent``, which the audit trail records (app/audit).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""A request id a client (or a proxy) may choose: visible ASCII with no separator a log parser or
a header could trip on, bounded. Anything else is replaced by our own."""


@dataclass(slots=True)
class Context:
    request_id: str | None = None
    clinic_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    credential_id: uuid.UUID | None = None
    role: str | None = None
    action: str | None = None
    """What the route does, in the permission table's words (``pets:write``)."""
    method: str | None = None
    route: str | None = None
    """The route's template (``/api/v1/pets/{pet_id}``), never the path a client sent."""
    job_id: int | None = None
    queue: str | None = None
    task: str | None = None
    event_id: str | None = None
    """A Stripe event's id, while a job applies it."""
    client_ip: str | None = None
    user_agent: str | None = None

    def fields(self) -> dict[str, Any]:
        """The fields that are set, as strings where they are ids (for logs, tags, attributes);
        never where the request came from."""
        found: dict[str, Any] = {}
        for name in _SHOWN:
            value = getattr(self, name)
            if value is not None:
                found[name] = str(value) if isinstance(value, uuid.UUID) else value
        return found


_ORIGIN = frozenset({"client_ip", "user_agent"})
_SHOWN = tuple(field.name for field in dataclass_fields(Context) if field.name not in _ORIGIN)
"""Read one by one: every log line asks, and ``dataclasses.asdict`` deep-copies (a third of an
access line's cost)."""


_current: ContextVar[Context | None] = ContextVar("vetify_context", default=None)


def current() -> Context | None:
    """The context of the request or job under way, if any."""
    return _current.get()


@contextmanager
def bound(context: Context) -> Iterator[Context]:
    """``context`` is the current one within the block."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def update(**fields: Any) -> None:
    """Set fields of the current context; nothing when no request or job is under way."""
    context = _current.get()
    if context is None:
        return
    for name, value in fields.items():
        setattr(context, name, value)


def request_id_from(sent: str | None) -> str:
    """The id a request is known by: the one it was sent with when that one is valid, otherwise
    a new one (never an error: an odd header must not cost the request)."""
    if sent is not None and _VALID_REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


USER_AGENT_KEPT = 300
"""Characters of a User-Agent the audit trail keeps (``audit_events.user_agent``)."""


def address(peer: str | None) -> str | None:
    """The peer's IP address as the audit trail stores it (canonical text), or None when it is
    none: behind a trusted proxy the peer is what X-Forwarded-For said, which a client may
    have written itself, any text of any length."""
    try:
        found = ipaddress.ip_address(peer or "")
    except ValueError:
        return None
    # An IPv6 zone (``fe80::1%eth0``) may be any text of any length: not where a client is.
    return None if getattr(found, "scope_id", None) else str(found)


def kept(user_agent: str) -> str | None:
    """What the audit trail stores of a User-Agent: its printable characters (a NUL, which a
    client may send and PostgreSQL cannot store, and other controls dropped), bounded."""
    return "".join(c for c in user_agent if c.isprintable())[:USER_AGENT_KEPT] or None
