"""Where a request came from, as the audit trail stores it (app/kit/context.py): an address or
nothing, a User-Agent's printable characters, bounded. Behind a trusted proxy both are what the
client wrote in its headers, any text of any length, so what is stored must fit its column."""

from __future__ import annotations

import pytest

from app.kit import context


@pytest.mark.parametrize(
    ("peer", "stored"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:DB8::0001", "2001:db8::1"),  # canonical text
        ("fe80::1%eth0", None),  # a zone is no place a client is, and may be any text
        ("fe80::1%" + "a" * 100, None),
        ("fe80::1%\x00", None),
        ("unknown", None),
        ("192.0.2.7, 198.51.100.1", None),
        ("", None),
        (None, None),
    ],
)
def test_an_address_is_stored_as_one_or_not_at_all(peer: str | None, stored: str | None) -> None:
    assert context.address(peer) == stored


def test_a_user_agent_keeps_its_printable_characters_and_its_first_300() -> None:
    assert context.kept("front-desk/1.0 \x00(\x07x)") == "front-desk/1.0 (x)"
    assert context.kept("a" * 1000) == "a" * context.USER_AGENT_KEPT
    assert context.kept("\x00\x01") is None
