"""The Stripe webhook's checks before anything is stored (`app.billing.intake.verify`): the
signature (missing, ahead of our clock, too old, under a rolled secret), then the body (JSON,
Stripe's event shape, text PostgreSQL can store), each refusal in its own words. Through the
app, with every shape Stripe sends, is tests/contract/stripe's."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from app.billing import intake
from app.billing.intake import TOLERANCE, SignatureRefused, verify
from app.kit.problems import BadRequest
from tests.harness.stripe import events as fake
from tests.harness.stripe.signing import sign, sign_many

SECRET = "whsec_unit_" + "a" * 24  # pragma: allowlist secret - made up for these tests
ROLLED = "whsec_unit_" + "b" * 24  # pragma: allowlist secret
NOW = int(time.time())
NO_MATCH = "No signature matches an active endpoint secret, or it is too old."


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our clock at NOW (the SDK's own check of age reads the real one, a moment later)."""
    monkeypatch.setattr(intake, "time", SimpleNamespace(time=lambda: NOW))


def event(**changes: Any) -> dict[str, Any]:
    evt = fake.event("invoice.paid", {"id": "in_1", "object": "invoice"}, created=NOW)
    return evt | changes


def body(evt: Any) -> bytes:
    return json.dumps(evt).encode()


def refused(payload: bytes, signature: str | None, secrets: list[str] = [SECRET]) -> str:  # noqa: B006
    with pytest.raises(BadRequest) as caught:
        verify(payload, signature, secrets)
    return str(caught.value.detail)


def test_a_delivery_signed_with_an_active_secret_is_its_event() -> None:
    evt = event()
    assert verify(body(evt), sign(body(evt), SECRET, NOW), [SECRET]) == evt
    # While a secret rolls, either signs: the first that does not match is passed over.
    assert verify(body(evt), sign(body(evt), ROLLED, NOW), [SECRET, ROLLED]) == evt
    assert verify(body(evt), sign_many(body(evt), [ROLLED], NOW), [ROLLED]) == evt


def test_signatures_missing_ahead_of_our_clock_or_too_old_are_refused() -> None:
    evt = event()
    payload = body(evt)
    with pytest.raises(SignatureRefused):
        verify(payload, None, [SECRET])
    assert refused(payload, "") == "The Stripe-Signature header is missing."
    ahead = NOW + TOLERANCE + 1
    assert refused(payload, sign(payload, SECRET, ahead)) == (
        "The signature's timestamp is in the future."
    )
    # Exactly at the tolerance is still in time; the timestamp is read wherever it stands.
    at_edge = sign(payload, SECRET, NOW + TOLERANCE)
    assert verify(payload, at_edge, [SECRET]) == evt
    v1, t = at_edge.split(",")[1], f"t={ahead}"
    assert refused(payload, f"v0=123, {t},{v1}") == "The signature's timestamp is in the future."
    # Too old: a replay. The SDK checks age with our tolerance.
    assert refused(payload, sign(payload, SECRET, int(time.time()) - TOLERANCE - 5)) == NO_MATCH
    assert refused(payload, sign(payload, ROLLED, NOW)) == NO_MATCH


def signed(payload: bytes) -> str:
    return sign(payload, SECRET, NOW)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not UTF-8", b'{"id": "evt_1", '],
    ids=["not-utf-8", "not-json"],
)
def test_a_signed_body_that_is_not_json_is_refused(payload: bytes) -> None:
    assert refused(payload, signed(payload)) == "The event is not JSON."


@pytest.mark.parametrize(
    "evt",
    [
        [event()],
        event(id=1),
        event(id="cus_1"),
        event(type=["invoice.paid"]),
        event(type="Invoice Paid"),
        event(created=str(NOW)),
        event(created=-1),
        event(created=NOW + TOLERANCE + 1),
        event(livemode="false"),
        event(data=[]),
        event(data={"object": "in_1"}),
    ],
    ids=[
        "a-list",
        "id-not-text",
        "id-not-an-event-id",
        "type-not-text",
        "type-not-a-type",
        "created-not-a-number",
        "created-before-1970",
        "created-in-the-future",
        "livemode-not-a-bool",
        "data-not-an-object",
        "data-object-not-an-object",
    ],
)
def test_a_signed_body_that_is_not_a_stripe_event_is_refused(evt: Any) -> None:
    assert refused(body(evt), signed(body(evt))) == "The body is not a Stripe event."


@pytest.mark.parametrize("created", [0, NOW + TOLERANCE])
def test_an_event_made_at_the_bounds_of_time_is_taken(created: int) -> None:
    evt = event(created=created)
    assert verify(body(evt), signed(body(evt)), [SECRET]) == evt


def test_an_event_with_text_postgresql_cannot_store_is_refused() -> None:
    evt = event(data={"object": {"id": "in_1", "description": "a\x00b"}})
    assert refused(body(evt), signed(body(evt))) == (
        "The event holds text that cannot be stored (NUL, or bad UTF-16)."
    )
