"""Who may do what: the one table of role x action.

Routes name the action they perform (``Allowed(Action.pets_write)``); nothing else decides.
The authorization tests are generated from this table.
"""

from __future__ import annotations

from enum import StrEnum

from app.auth.models import Role


class Action(StrEnum):
    clinic_read = "clinic:read"
    clinic_manage = "clinic:manage"
    clinic_export = "clinic:export"  # the whole clinic in one archive: the owner's only
    staff_read = "staff:read"
    staff_manage = "staff:manage"
    customers_read = "customers:read"
    customers_write = "customers:write"
    customers_privacy = "customers:privacy"  # a client's data-protection rights: erasure, holds
    pets_read = "pets:read"
    pets_write = "pets:write"
    appointments_read = "appointments:read"
    appointments_write = "appointments:write"
    records_read = "records:read"
    records_write = "records:write"
    records_sign = "records:sign"
    own_session = "session:own"  # one's own login: me, logout, switch, multi-factor enrolment
    own_credentials = "credentials:own"  # one's own API tokens
    billing_manage = "billing:manage"  # the clinic's plan, payment and subscription
    audit_read = "audit:read"  # the clinic's audit trail: who did what, from where


MFA_EXEMPT = frozenset({Action.own_session})
"""What a member may still do in a clinic that requires multi-factor authentication before
they have enrolled: see who they are, enrol, log out."""


PAYMENT_EXEMPT = frozenset(
    {
        Action.own_session,
        Action.own_credentials,
        Action.staff_manage,
        Action.billing_manage,
        Action.customers_privacy,
        Action.clinic_export,
    }
)
"""What a read-only clinic (unpaid) may still write: its own log-in and tokens (to export), its
staff (taking a departed member's access away never waits on payment), paying, its clients'
data-protection rights (a legal duty that does not wait on payment either), and taking its
whole data away (a clinic that leaves has stopped paying)."""


_READ = {
    Action.clinic_read,
    Action.staff_read,
    Action.customers_read,
    Action.pets_read,
    Action.appointments_read,
    Action.records_read,
    Action.own_session,
    Action.own_credentials,
}
_FRONT_DESK = {Action.customers_write, Action.pets_write, Action.appointments_write}
_CLINICAL = {Action.records_write}

PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.owner: frozenset(Action),
    Role.admin: frozenset(
        _READ
        | _FRONT_DESK
        | {
            Action.clinic_manage,
            Action.staff_manage,
            Action.billing_manage,
            Action.audit_read,
            Action.customers_privacy,
        }
    ),
    Role.vet: frozenset(_READ | _FRONT_DESK | _CLINICAL | {Action.records_sign}),
    Role.technician: frozenset(_READ | _FRONT_DESK | _CLINICAL),
    Role.receptionist: frozenset(_READ | _FRONT_DESK),
    Role.read_only: frozenset(_READ),
}


def allows(role: Role, action: Action) -> bool:
    return action in PERMISSIONS[role]


ADMINISTRATIVE = frozenset(
    role for role in Role if allows(role, Action.staff_manage) or allows(role, Action.clinic_manage)
)
"""Roles that decide who may do what in the clinic. Who holds one, or is invited to, is a
security setting: changing it needs a step-up (ADR 0014)."""
