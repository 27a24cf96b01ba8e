"""Passwords (argon2id) and bearer credentials (``<prefix>_<clinic hex>_<secret>``, sha256)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kit import crypto
from app.kit.crypto import (
    SECRET_BYTES,
    configure_password_hashing,
    hash_password,
    hash_secret,
    new_credential,
    parse_credential,
    password_needs_rehash,
    secrets_equal,
    verify_password,
)
from fixtures.factories import TEST_HASHING

# pragma: allowlist nextline secret - a test passphrase to hash
PASSWORD = "correct horse battery staple"
PREFIX = "vtk"
pytestmark = pytest.mark.usefixtures("cheap_hashing")


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


def test_password_verifies(password_hash: str) -> None:
    assert verify_password(password_hash, PASSWORD)


@pytest.mark.parametrize("wrong", ["", PASSWORD.upper(), PASSWORD[:-1]])
def test_wrong_password_fails(password_hash: str, wrong: str) -> None:
    assert not verify_password(password_hash, wrong)


def test_hash_is_salted_argon2id(password_hash: str) -> None:
    assert password_hash.startswith("$argon2id$")
    assert PASSWORD not in password_hash
    again = hash_password(PASSWORD)
    assert again != password_hash
    assert verify_password(again, PASSWORD)


@pytest.mark.parametrize("stored", [None, "", "not a hash", "$argon2id$v=19$garbage"])
def test_no_or_broken_hash_never_verifies(stored: str | None) -> None:
    assert verify_password(stored, PASSWORD) is False


def test_credential_round_trips_clinic_and_hash() -> None:
    clinic = uuid.uuid4()
    credential, stored = new_credential(PREFIX, clinic)
    assert credential.startswith(f"{PREFIX}_{clinic.hex}_")
    assert parse_credential(PREFIX, credential) == clinic
    assert secrets_equal(hash_secret(credential), stored)
    assert len(stored) == 32  # sha256, the secret itself is not kept
    assert credential.encode() not in stored


def test_credentials_are_unique() -> None:
    clinic = uuid.uuid4()
    assert new_credential(PREFIX, clinic) != new_credential(PREFIX, clinic)


@given(clinic=st.uuids(), data=st.data())
def test_tampering_changes_hash_or_fails_parsing(clinic: uuid.UUID, data: st.DataObject) -> None:
    credential, stored = new_credential(PREFIX, clinic)
    index = data.draw(st.integers(0, len(credential) - 1), label="index")
    char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != credential[index]))
    tampered = credential[:index] + char + credential[index + 1 :]
    assert not secrets_equal(hash_secret(tampered), stored)
    parsed = parse_credential(PREFIX, tampered)
    if index < len(PREFIX) + 1:  # the prefix and its separator
        assert parsed is None


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param(f"vts_{uuid.uuid4().hex}_{'a' * 43}", id="other-prefix"),
        pytest.param(f"vtk{uuid.uuid4().hex}_{'a' * 43}", id="no-separator"),
        pytest.param(f"vtk_{uuid.uuid4().hex}_{'a' * (SECRET_BYTES - 1)}", id="short-secret"),
        pytest.param(f"vtk_{uuid.uuid4().hex}", id="no-secret"),
        pytest.param(f"vtk__{'a' * 43}", id="empty-clinic"),
        pytest.param(f"vtk_{'g' * 32}_{'a' * 43}", id="non-hex-clinic"),
        pytest.param(f"vtk_{uuid.uuid4().hex[:31]}_{'a' * 43}", id="short-clinic"),
        pytest.param(f"vtk_{uuid.uuid4()}_{'a' * 43}", id="hyphenated-clinic"),
        pytest.param(f"vtk_{{{uuid.uuid4().hex}}}_{'a' * 43}", id="braced-clinic"),
        pytest.param(f"vtk_urn:uuid:{uuid.uuid4().hex}_{'a' * 43}", id="urn-clinic"),
        pytest.param(f"vtk_+{uuid.uuid4().hex[1:]}_{'a' * 43}", id="signed-clinic"),
        pytest.param(f"vtk_ {uuid.uuid4().hex[1:]}_{'a' * 43}", id="space-clinic"),
        pytest.param("", id="empty"),
    ],
)
def test_not_one_of_ours(credential: str) -> None:
    """Only ``<prefix>_<32 hex digits>_<secret>`` names a clinic."""
    assert parse_credential(PREFIX, credential) is None


@given(st.text(), st.text())
def test_parse_never_raises(prefix: str, credential: str) -> None:
    parsed = parse_credential(prefix, credential)
    assert parsed is None or isinstance(parsed, uuid.UUID)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("a" * SECRET_BYTES, id="shortest"),
        pytest.param("a_b" + "c" * 40, id="underscore-in-secret"),
        pytest.param("_" * 43, id="all-underscores"),
    ],
)
def test_a_secret_of_ours_may_hold_underscores_and_be_as_short_as_its_bytes(secret: str) -> None:
    """token_urlsafe's alphabet has "_": the secret is all that follows the second one."""
    clinic = uuid.uuid4()
    assert parse_credential(PREFIX, f"{PREFIX}_{clinic.hex}_{secret}") == clinic


def test_hashes_are_made_with_every_configured_parameter_and_older_ones_are_flagged() -> None:
    older = hash_password(PASSWORD)  # TEST_HASHING's
    configure_password_hashing(time_cost=2, memory_cost=9 * 1024, parallelism=2)
    try:
        made = hash_password(PASSWORD)
        assert made.startswith("$argon2id$v=19$m=9216,t=2,p=2$")
        assert verify_password(older, PASSWORD)  # still verifies
        assert password_needs_rehash(older)
        assert not password_needs_rehash(made)
        # An unknown address is checked against a hash of these parameters too.
        assert not verify_password(None, PASSWORD)
        assert crypto._dummy_hash is not None
        assert crypto._dummy_hash.startswith("$argon2id$v=19$m=9216,t=2,p=2$")
    finally:
        configure_password_hashing(**TEST_HASHING)
