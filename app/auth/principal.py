"""Who is calling (``Principal``), and what the clinic's standing allows them (``Standing``).

Small on purpose: every domain's service takes a ``Principal`` to know the clinic it acts in,
and this module imports nothing from billing or clinics. What billing decides about a clinic
(its API quota, whether it may write) reaches a ``Principal`` as a :class:`Standing`, attached
in the dependency layer (``app.auth.deps``) by the provider ``app.main`` wires in.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import CredentialKind, Role
from app.auth.permissions import MFA_EXEMPT, Action, allows
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import Forbidden, MfaEnrolmentRequired, StepUpRequired
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Standing:
    """The clinic's standing this request, as billing sees it (docs/billing.md)."""

    requests_per_minute: int
    """The clinic's whole API quota, shared by all its staff and tokens."""
    read_only: bool
    """The clinic has not paid: writes are refused with 402."""
    changes_at: dt.datetime | None = None
    """When this standing may change with nothing written (a trial's or a grace period's end);
    until then it may be kept."""


StandingOf = Callable[[AsyncSession, Settings, uuid.UUID], Awaitable[Standing]]
"""Looks up a clinic's standing in a session entered in that clinic."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and the one clinic they act in for this request (a ``Tenant``)."""

    user_id: uuid.UUID
    clinic_id: uuid.UUID
    role: Role
    credential_id: uuid.UUID
    credential_kind: CredentialKind
    mfa_pending: bool = False
    """The clinic requires multi-factor authentication and this user has not enrolled."""
    read_only: bool = False
    """The clinic's standing: it has not paid, and writes are refused with 402."""
    stepped_up: bool = False
    """A login session whose log-in passed a second factor within ``step_up_minutes``: it may
    change security settings (ADR 0014)."""

    def can(self, action: Action) -> bool:
        return allows(self.role, action)

    def require(self, action: Action) -> None:
        # Enrolment first: until then the member may do nothing else, whatever their role.
        if self.mfa_pending and (
            self.credential_kind is CredentialKind.api_token or action not in MFA_EXEMPT
        ):
            raise MfaEnrolmentRequired(
                "This clinic requires multi-factor authentication: log in with a session and"
                " enrol (POST /api/v1/auth/mfa/totp) first. API tokens of members without it"
                " are refused."
            )
        if not self.can(action):
            security_event(
                SecurityEvent.permission_denied,
                outcome="refused",
                user_id=self.user_id,
                clinic_id=self.clinic_id,
                credential_id=self.credential_id,
                role=str(self.role),
                action=str(action),
            )
            raise Forbidden(f"Your role ({self.role}) may not do {action}.")

    def require_step_up(self) -> None:
        """Refuse a change of a security setting unless this is a recent log-in with a second
        factor (step-up)."""
        if self.stepped_up:
            return
        if self.credential_kind is CredentialKind.api_token:
            raise StepUpRequired(
                "An API token never changes a security setting: use a login session that passed"
                " multi-factor authentication in the last few minutes."
            )
        raise StepUpRequired(
            "Security settings change only within minutes of a log-in that passed a second"
            " factor: log in again with your password and a code from your authenticator"
            " (turn multi-factor authentication on first if it is off)."
        )
