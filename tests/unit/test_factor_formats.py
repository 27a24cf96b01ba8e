"""What is kept across releases and so must not drift: a recovery code's stored hash, a store's
key for an address; and the second factor's checks that need no database."""

from __future__ import annotations

import hashlib
import re
import uuid

import pyotp
import pytest
from starlette.requests import Request

from app.auth import mfa
from app.auth.models import CredentialKind, Role, User
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.auth.quotas import client_ip
from app.kit import crypto
from app.kit.problems import Forbidden

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # nosec B105  # pragma: allowlist secret
# 2026-12-06 09:30:00 UTC, on a step's boundary.
AT = 1_796_549_400.0


@pytest.mark.mutation_targets("app/auth/mfa.py::hash_recovery_code")
def test_a_recovery_codes_stored_hash_is_of_its_normal_form_under_the_services_prefix() -> None:
    expected = hashlib.sha256(b"vetify-recovery:abcde12345fedcb54321").digest()

    for typed in ("abcde-12345-fedcb-54321", "ABCDE 12345\tFEDCB-54321", " abcde12345fedcb54321 "):
        assert mfa.hash_recovery_code(typed) == expected


@pytest.mark.mutation_targets("app/auth/mfa.py::new_recovery_codes")
def test_recovery_codes_are_ten_different_groups_of_hex() -> None:
    codes = mfa.new_recovery_codes()

    assert len(set(codes)) == len(codes) == 10
    assert all(re.fullmatch(r"[0-9a-f]{5}(-[0-9a-f]{5}){3}", code) for code in codes)


@pytest.mark.mutation_targets("app/auth/mfa.py::matching_step")
def test_a_code_is_matched_to_its_step_at_the_time_given_not_the_clock() -> None:
    totp, step = pyotp.TOTP(SECRET), int(AT) // mfa.STEP_SECONDS

    assert mfa.matching_step(SECRET, totp.at(AT), now=AT) == step
    assert mfa.matching_step(SECRET, totp.at(AT - 30), now=AT) == step - 1  # drift behind
    assert mfa.matching_step(SECRET, totp.at(AT + 30), now=AT) == step + 1  # and ahead
    assert mfa.matching_step(SECRET, totp.at(AT + 60), now=AT) is None
    assert mfa.matching_step(SECRET, "12345a", now=AT) is None


@pytest.mark.mutation_targets(
    "app/auth/mfa.py::accept_totp", "app/auth/mfa.py::accept_second_factor"
)
async def test_a_user_without_a_factor_has_every_code_refused_before_any_query() -> None:
    pending = User(email="p@example.org", totp_secret_sealed=None, totp_enabled_at=None)
    code = pyotp.TOTP(SECRET).now()

    # No session: a query would fail the test.
    assert await mfa.accept_totp(None, pending, code) is False  # type: ignore[arg-type]
    assert await mfa.accept_second_factor(None, pending, code) is False  # type: ignore[arg-type]


@pytest.mark.mutation_targets("app/kit/crypto.py::address_key")
def test_a_stores_key_for_an_address_is_its_normalised_digest_and_holds_no_address() -> None:
    key = crypto.address_key("  Rita.Costa@Example.org ")

    assert key == hashlib.sha256(b"rita.costa@example.org").hexdigest()[:32]
    assert key == crypto.address_key("rita.costa@example.org")
    assert "rita" not in key


@pytest.mark.mutation_targets("app/auth/principal.py::Principal.require")
def test_a_refused_action_is_a_security_event_naming_the_caller_and_the_action(
    security_events,
) -> None:
    caller = Principal(
        user_id=uuid.uuid4(),
        clinic_id=uuid.uuid4(),
        role=Role.receptionist,
        credential_id=uuid.uuid4(),
        credential_kind=CredentialKind.api_token,
    )

    with pytest.raises(Forbidden):
        caller.require(Action.records_write)

    assert [(str(event), fields) for event, fields in security_events] == [
        (
            "permission_denied",
            {
                "event": "permission_denied",
                "outcome": "refused",
                "user_id": str(caller.user_id),
                "clinic_id": str(caller.clinic_id),
                "credential_id": str(caller.credential_id),
                "role": "receptionist",
                "action": "records:write",
            },
        )
    ]


@pytest.mark.mutation_targets("app/auth/quotas.py::client_ip")
def test_a_request_with_no_peer_is_counted_as_unknown() -> None:
    peerless = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    peer = Request({**peerless.scope, "client": ("192.0.2.4", 5000)})

    assert (client_ip(peerless), client_ip(peer)) == ("unknown", "192.0.2.4")
