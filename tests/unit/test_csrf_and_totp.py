"""The pure parts of CSRF and TOTP: origins as browsers write them, tokens, the drift window."""

from __future__ import annotations

import re
import time

import pyotp
import pytest

from app.auth import mfa
from app.kit import csrf
from app.settings import Settings


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://vetify.example", "https://vetify.example"),
        ("https://Vetify.Example:443/path?q=1", "https://vetify.example"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("http://[::1]:8080/x", "http://[::1]:8080"),
        ("null", None),
        ("javascript:alert(1)", None),
        ("https://", None),
        ("http://host:99999", None),
        ("http://vetify.example:80/", "http://vetify.example"),
        ("https://vetify.example:8443", "https://vetify.example:8443"),
        ("  https://vetify.example/  ", "https://vetify.example"),
        ("ftp://vetify.example", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert csrf.origin_of(url) == origin


def test_stated_origin_prefers_origin_then_referer() -> None:
    assert csrf.stated_origin({}) is None
    assert csrf.stated_origin({"referer": "https://a.example/p"}) == "https://a.example"
    assert csrf.stated_origin({"origin": "https://b.example", "referer": "https://a.example/"}) == (
        "https://b.example"
    )
    assert csrf.stated_origin({"origin": "null"}) == ""
    assert csrf.stated_origin({"referer": "about:blank"}) == ""


def test_the_allowed_origins_are_the_services_own_and_the_trusted_ones() -> None:
    assert csrf.allowed_origins(
        "https://Vetify.example/app/", ["http://localhost:3000/", "not a url", "https://x.example"]
    ) == frozenset({"https://vetify.example", "http://localhost:3000", "https://x.example"})
    assert csrf.allowed_origins("https://vetify.example", []) == {"https://vetify.example"}


def test_the_token_is_bound_to_the_session_secret() -> None:
    token = csrf.token_for("vts_a_secret")
    assert token == csrf.token_for("vts_a_secret")
    assert token != csrf.token_for("vts_another")
    assert "=" not in token
    assert csrf.token_matches("vts_a_secret", token)
    assert not csrf.token_matches("vts_a_secret", None)
    assert not csrf.token_matches("vts_a_secret", token[:-1])
    assert not csrf.token_matches("vts_a_secret", "")


def test_a_token_issued_before_a_deploy_still_matches_after_it() -> None:
    """Two versions serve side by side during a rolling deploy: the token's derivation is
    fixed, known answer and all (unpadded URL-safe base64 of 32 bytes)."""
    # pragma: allowlist nextline secret - the token of a made-up session secret, a known answer
    assert csrf.token_for("vts_a_secret") == "tkUKXgH0d1lU_DhDBmlFm8vAqXyE5OcYQA9IeaGbno4"


def test_a_code_matches_its_step_within_one_step_of_drift() -> None:
    secret = mfa.new_secret()
    totp = pyotp.TOTP(secret)
    now = (time.time() // 30) * 30 + 15  # mid-step
    step = int(now // 30)
    for offset in (-1, 0, 1):
        assert mfa.matching_step(secret, totp.at(now + 30 * offset), now) == step + offset
    for offset in (-2, 2):
        assert mfa.matching_step(secret, totp.at(now + 30 * offset), now) is None
    assert mfa.matching_step(secret, "12345", now) is None


def test_recovery_codes_are_random_and_typed_back_loosely() -> None:
    codes = mfa.new_recovery_codes()
    assert len(set(codes)) == 10
    # Shown once, to be written down: four groups of five hex digits.
    assert all(re.fullmatch(r"[0-9a-f]{5}(-[0-9a-f]{5}){3}", code) for code in codes)
    code = codes[0]
    assert mfa.hash_recovery_code(code) == mfa.hash_recovery_code(code.upper().replace("-", " "))
    assert mfa.hash_recovery_code(code) != mfa.hash_recovery_code(codes[1])


@pytest.mark.parametrize(
    "entry", ["app.vetify.example", "https://", "ftp://x.example", "https://x/y", "*", "null"]
)
def test_a_trusted_origin_must_be_an_origin(entry: str) -> None:
    with pytest.raises(ValueError, match="CORS_ALLOW_ORIGINS"):
        Settings(cors_allow_origins=[entry])


def test_trusted_origins_are_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("VETIFY_CORS_ALLOW_ORIGINS", "https://app.vetify.example, https://b.example")
    assert Settings().cors_allow_origins == ["https://app.vetify.example", "https://b.example"]
