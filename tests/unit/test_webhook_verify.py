"""The Stripe webhook's checks before anything is stored (`app.billing.intake.verify`): the
signature (missing, ahead of our clock, too old, under a rolled secret), then the body (JSON,
Stripe's event shape, text PostgreSQL can store), each refusal in its own words. Through the
app, with every shape Stripe sends, is tests/contract/stripe's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
NO_MATCH = "No signature matches an active endpoint secret, or it is too old."


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> int:
    """Our clock, stopped when the test starts (never at import: a session may run the test
    minutes later); the SDK's own check of age reads the real clock, a moment on."""
    stopped = int(time.time())
    monkeypatch.setattr(intake, "time", SimpleNamespace(time=lambda: stopped))
    return stopped


def event(now: int, **changes: Any) -> dict[str, Any]:
    evt = fake.event("invoice.paid", {"id": "in_1", "object": "invoice"}, created=now)
    return evt | changes


def body(evt: Any) -> bytes:
    return json.dumps(evt).encode()


def refused(payload: bytes, signature: str | None, secrets: tuple[str, ...] = (SECRET,)) -> str:
    with pytest.raises(BadRequest) as caught:
        verify(payload, signature, list(secrets))
    return str(caught.value.detail)


def test_a_delivery_signed_with_an_active_secret_is_its_event(now: int) -> None:
    evt = event(now)
    assert verify(body(evt), sign(body(evt), SECRET, now), [SECRET]) == evt
    # While a secret rolls, either signs: the first that does not match is passed over.
    assert verify(body(evt), sign(body(evt), ROLLED, now), [SECRET, ROLLED]) == evt
    assert verify(body(evt), sign_many(body(evt), [ROLLED], now), [ROLLED]) == evt


def test_signatures_missing_ahead_of_our_clock_or_too_old_are_refused(now: int) -> None:
    evt = event(now)
    payload = body(evt)
    with pytest.raises(SignatureRefused):
        verify(payload, None, [SECRET])
    assert refused(payload, "") == "The Stripe-Signature header is missing."
    ahead = now + TOLERANCE + 1
    assert refused(payload, sign(payload, SECRET, ahead)) == (
        "The signature's timestamp is in the future."
    )
    # Exactly at the tolerance is still in time; the timestamp is read wherever it stands.
    at_edge = sign(payload, SECRET, now + TOLERANCE)
    assert verify(payload, at_edge, [SECRET]) == evt
    v1, t = at_edge.split(",")[1], f"t={ahead}"
    assert refused(payload, f"v0=123, {t},{v1}") == "The signature's timestamp is in the future."
    # Too old: a replay. The SDK checks age with our tolerance.
    assert refused(payload, sign(payload, SECRET, int(time.time()) - TOLERANCE - 5)) == NO_MATCH
    assert refused(payload, sign(payload, ROLLED, now)) == NO_MATCH
    # No timestamp, or one that is not a number: never matched, whatever the v1 says.
    v1 = sign(payload, SECRET, now).split(",")[1]
    for stamp in ("", "t=,", f"t=-{now},", f"t={now}x,", "ts=1,"):
        assert refused(payload, f"{stamp}{v1}") == NO_MATCH, stamp


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not UTF-8", b'{"id": "evt_1", '],
    ids=["not-utf-8", "not-json"],
)
def test_a_signed_body_that_is_not_json_is_refused(now: int, payload: bytes) -> None:
    assert refused(payload, sign(payload, SECRET, now)) == "The event is not JSON."


@pytest.mark.parametrize(
    "made",
    [
        lambda now: [event(now)],
        lambda now: event(now, id=1),
        lambda now: event(now, id="cus_1"),
        lambda now: event(now, type=["invoice.paid"]),
        lambda now: event(now, type="Invoice Paid"),
        lambda now: event(now, created=str(now)),
        lambda now: event(now, created=-1),
        lambda now: event(now, created=now + TOLERANCE + 1),
        lambda now: event(now, livemode="false"),
        lambda now: event(now, data=[]),
        lambda now: event(now, data={"object": "in_1"}),
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
def test_a_signed_body_that_is_not_a_stripe_event_is_refused(
    now: int, made: Callable[[int], Any]
) -> None:
    payload = body(made(now))
    assert refused(payload, sign(payload, SECRET, now)) == "The body is not a Stripe event."


@pytest.mark.parametrize("after", [None, TOLERANCE], ids=["1970", "at-the-tolerance"])
def test_an_event_made_at_the_bounds_of_time_is_taken(now: int, after: int | None) -> None:
    evt = event(now, created=0 if after is None else now + after)
    assert verify(body(evt), sign(body(evt), SECRET, now), [SECRET]) == evt


def test_an_event_with_text_postgresql_cannot_store_is_refused(now: int) -> None:
    evt = event(now, data={"object": {"id": "in_1", "description": "a\x00b"}})
    assert refused(body(evt), sign(body(evt), SECRET, now)) == (
        "The event holds text that cannot be stored (NUL, or bad UTF-16)."
    )
