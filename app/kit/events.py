"""Security events: what an operator's incident detection watches, and what the audit log will
persist. Each is a structured record on the ``vetify.security`` logger:

    event      one of :class:`SecurityEvent`
    outcome    what came of it: ``succeeded``, ``refused``, ``locked``...
    user_id, credential_id, clinic_id
               the actor, from the request's context unless given (ids, never an email)
    client_ip  where a request came from, when there is one
    ...        other fields the caller gives (ids, counts, names of policies)

Other parts of the service follow the stream without parsing logs: :func:`subscribe` a
callable, and it is called with each event and its fields, in the code that raised it, after
the record is logged (metrics count events by name this way). A listener must be quick and not
raise; one that does is logged and skipped, and the event still counts as emitted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from app.kit import context

log = logging.getLogger("vetify.security")


class SecurityEvent(StrEnum):
    login_failed = "login_failed"
    login_succeeded = "login_succeeded"
    lockout = "lockout"
    unlock = "unlock"
    mfa_enrolled = "mfa_enrolled"
    mfa_disabled = "mfa_disabled"
    mfa_failed = "mfa_failed"
    token_created = "token_created"  # noqa: S105 - an event's name, not a secret  # nosec B105
    token_revoked = "token_revoked"  # noqa: S105  # nosec B105
    permission_denied = "permission_denied"
    rate_limited = "rate_limited"
    webhook_signature_refused = "webhook_signature_refused"
    production_settings_refused = "production_settings_refused"
    # The account's lifecycle (ADR 0013): who proved an address or changed a password.
    email_verification_mailed = "email_verification_mailed"
    email_verified = "email_verified"
    password_reset_requested = "password_reset_requested"  # noqa: S105  # nosec B105  # pragma: allowlist secret
    password_reset = "password_reset"  # noqa: S105  # nosec B105  # pragma: allowlist secret
    password_changed = "password_changed"  # noqa: S105  # nosec B105  # pragma: allowlist secret
    # Who may do what in a clinic: a member's role changed, a member deactivated or back.
    role_changed = "role_changed"
    member_deactivated = "member_deactivated"
    member_reactivated = "member_reactivated"


Listener = Callable[[SecurityEvent, dict[str, Any]], None]
_listeners: list[Listener] = []

_ACTOR = ("user_id", "credential_id", "clinic_id")
REFUSALS = frozenset(
    {
        SecurityEvent.login_failed,
        SecurityEvent.lockout,
        SecurityEvent.mfa_failed,
        SecurityEvent.permission_denied,
        SecurityEvent.rate_limited,
        SecurityEvent.webhook_signature_refused,
        SecurityEvent.production_settings_refused,
    }
)
"""Events that say someone was refused: logged as warnings. The others say something was done
(a log-in, a token made), and stand only if the request that did it succeeded."""


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener(event, fields)`` on each event from now on; returns the call that stops
    it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def security_event(event: SecurityEvent, *, outcome: str, **fields: Any) -> None:
    """Log ``event`` with its ``outcome``, its actor (from the context unless given) and
    ``fields``; then tell the listeners."""
    under_way = context.current()
    known = under_way.fields() if under_way is not None else {}
    fields = {key: value for key, value in fields.items() if value is not None}
    record: dict[str, Any] = {
        "event": str(event),
        "outcome": outcome,
        **{key: known[key] for key in _ACTOR if key in known},
        **{key: str(value) if key in _ACTOR else value for key, value in fields.items()},
    }
    level = logging.WARNING if event in REFUSALS else logging.INFO
    log.log(level, "security event %s: %s", event, outcome, extra=record)
    for listener in list(_listeners):
        try:
            listener(event, record)
        except Exception:
            log.exception("a security event listener failed on %s", event)
