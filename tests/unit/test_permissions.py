"""The role x action table, asserted cell by cell against a matrix written out here.

A change to ``app.auth.permissions.PERMISSIONS`` must come with a change to ``EXPECTED``, so
every widening or narrowing of a role is reviewed.
"""

from __future__ import annotations

import uuid

import pytest

from app.auth.models import CredentialKind, Role
from app.auth.permissions import PERMISSIONS, Action, allows
from app.auth.principal import Principal
from app.kit.problems import Forbidden

ROLES = [Role.owner, Role.admin, Role.vet, Role.technician, Role.receptionist, Role.read_only]

# Columns: owner, admin, vet, technician, receptionist, read_only
# fmt: off
MATRIX: dict[str, tuple[int, int, int, int, int, int]] = {
    "clinic:read":        (1, 1, 1, 1, 1, 1),
    "clinic:manage":      (1, 1, 0, 0, 0, 0),
    "clinic:export":      (1, 0, 0, 0, 0, 0),
    "staff:read":         (1, 1, 1, 1, 1, 1),
    "staff:manage":       (1, 1, 0, 0, 0, 0),
    "customers:read":     (1, 1, 1, 1, 1, 1),
    "customers:write":    (1, 1, 1, 1, 1, 0),
    "customers:privacy":  (1, 1, 0, 0, 0, 0),
    "pets:read":          (1, 1, 1, 1, 1, 1),
    "pets:write":         (1, 1, 1, 1, 1, 0),
    "appointments:read":  (1, 1, 1, 1, 1, 1),
    "appointments:write": (1, 1, 1, 1, 1, 0),
    "records:read":       (1, 1, 1, 1, 1, 1),
    "records:write":      (1, 0, 1, 1, 0, 0),
    "records:sign":       (1, 0, 1, 0, 0, 0),
    "session:own":        (1, 1, 1, 1, 1, 1),
    "credentials:own":    (1, 1, 1, 1, 1, 1),
    "billing:manage":     (1, 1, 0, 0, 0, 0),
    "audit:read":         (1, 1, 0, 0, 0, 0),
}
# fmt: on

EXPECTED = {
    (role, action): bool(row[i]) for action, row in MATRIX.items() for i, role in enumerate(ROLES)
}


def test_matrix_covers_every_role_and_action() -> None:
    assert set(ROLES) == set(Role)
    assert set(MATRIX) == {a.value for a in Action}
    assert set(PERMISSIONS) == set(Role)


@pytest.mark.parametrize(("role", "action"), sorted(EXPECTED), ids=lambda v: str(v))
def test_table_cell(role: Role, action: str) -> None:
    assert allows(role, Action(action)) is EXPECTED[role, action]


def test_owner_can_do_everything() -> None:
    assert all(allows(Role.owner, action) for action in Action)


CLINIC_READS = {a for a in Action if a.endswith(":read")} - {Action.audit_read}
"""What every member reads: the clinic's records. Not its audit trail (who did what, from
where), which is its managers' (issue 20)."""


def test_read_only_reads_and_manages_only_its_own_credentials() -> None:
    granted = {a for a in Action if allows(Role.read_only, a)}
    assert granted == CLINIC_READS | {Action.own_session, Action.own_credentials}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_clinics_records_and_owns_its_credentials(role: Role) -> None:
    for action in CLINIC_READS | {Action.own_session, Action.own_credentials}:
        assert allows(role, action), action


def test_only_managers_read_the_audit_trail() -> None:
    assert {role for role in Role if allows(role, Action.audit_read)} == {Role.owner, Role.admin}


@pytest.mark.parametrize(
    ("role", "may", "may_not"),
    [
        (
            Role.receptionist,
            {Action.customers_write, Action.pets_write, Action.appointments_write},
            {
                Action.records_write,
                Action.records_sign,
                Action.staff_manage,
                Action.clinic_manage,
            },
        ),
        (Role.technician, {Action.records_write}, {Action.records_sign}),
        (Role.vet, {Action.records_write, Action.records_sign}, {Action.staff_manage}),
        (
            Role.admin,
            {Action.staff_manage, Action.clinic_manage},
            {Action.records_write, Action.records_sign},
        ),
    ],
    ids=lambda v: str(v) if isinstance(v, Role) else "",
)
def test_role_intent(role: Role, may: set[Action], may_not: set[Action]) -> None:
    assert all(allows(role, a) for a in may)
    assert not any(allows(role, a) for a in may_not)


def _principal(role: Role) -> Principal:
    return Principal(
        user_id=uuid.uuid4(),
        clinic_id=uuid.uuid4(),
        role=role,
        credential_id=uuid.uuid4(),
        credential_kind=CredentialKind.api_token,
    )


def test_require_refuses_with_forbidden() -> None:
    with pytest.raises(Forbidden) as caught:
        _principal(Role.read_only).require(Action.pets_write)
    assert caught.value.status == 403
    assert "pets:write" in str(caught.value.detail)


def test_require_allows_silently() -> None:
    principal = _principal(Role.vet)
    principal.require(Action.records_sign)
    assert principal.can(Action.records_sign)
    assert not principal.can(Action.staff_manage)
