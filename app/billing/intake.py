"""The Stripe webhook's inbox: verify a delivery, then store it once and enqueue its job.

A webhook is verified, stored (once: the event id is the key) and acknowledged; a job
(``app.billing.jobs``) applies it (``app.billing.sync``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import stripe as stripe_sdk
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.models import EventStatus, StripeEvent
from app.kit.problems import BadRequest
from app.kit.text import unstorable_at
from app.queue import enqueue

APPLY_STRIPE_EVENT = "billing.apply_stripe_event"
"""The job (``app.billing.jobs``) that applies a stored event."""


class SignatureRefused(BadRequest):
    slug, title = "webhook-signature", "Webhook signature not valid"


TOLERANCE = stripe_sdk.Webhook.DEFAULT_TOLERANCE
"""Seconds a signature may be old (a replay beyond it) or ahead of our clock (Stripe's SDK
only checks the first)."""


def verify(payload: bytes, signature: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event, if ``signature`` is Stripe's for ``payload`` under one of ``secrets`` (all
    active while a secret rolls) and made within ``TOLERANCE`` of now, either way."""
    if not signature:
        raise SignatureRefused("The Stripe-Signature header is missing.")
    if _signed_at(signature) > time.time() + TOLERANCE:
        raise SignatureRefused("The signature's timestamp is in the future.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:  # Stripe signs JSON, which is UTF-8
        raise BadRequest("The event is not JSON.") from exc
    for secret in secrets:
        try:
            # Only the signature: the SDK's construct_event also parses, and fails with an
            # AttributeError (a 500) on signed JSON that is not an object; _event checks that.
            stripe_sdk.WebhookSignature.verify_header(text, signature, secret, TOLERANCE)
        except stripe_sdk.SignatureVerificationError:
            continue
        return _event(payload)
    raise SignatureRefused("No signature matches an active endpoint secret, or it is too old.")


def _signed_at(signature: str) -> int:
    """The ``t=`` of a ``Stripe-Signature`` header (0 when it has none: the check below
    refuses it)."""
    for item in signature.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            return int(value)
    return 0


_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,255}")
_LATEST = 2**37  # seconds since 1970: the year 6325, far past any event and within datetime


def _event(payload: bytes) -> dict[str, Any]:
    """The signed body as an event, if it is one we can store as it came (Stripe's shapes;
    text PostgreSQL takes: no NUL, no lone surrogates)."""
    try:
        event = json.loads(payload)
    except ValueError as exc:  # signed, but not JSON
        raise BadRequest("The event is not JSON.") from exc
    ok = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and _EVENT_ID.fullmatch(event["id"]) is not None
        and isinstance(event.get("type"), str)
        and _EVENT_TYPE.fullmatch(event["type"]) is not None
        and type(event.get("created")) is int
        and 0 <= event["created"] <= min(_LATEST, time.time() + TOLERANCE)
        and isinstance(event.get("livemode", False), bool)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
    if not ok:
        raise BadRequest("The body is not a Stripe event.")
    if unstorable_at(event) is not None:
        raise BadRequest("The event holds text that cannot be stored (NUL, or bad UTF-16).")
    return dict(event)


async def receive(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Store the event and enqueue its job, in one transaction; False if it was already here."""
    stored = await session.scalar(
        insert(StripeEvent)
        .values(
            id=event["id"],
            type=event["type"],
            created=dt.datetime.fromtimestamp(event["created"], dt.UTC),
            livemode=bool(event.get("livemode", False)),
            payload=event,
            status=EventStatus.pending,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    )
    if stored is None:
        return False
    await enqueue(session, APPLY_STRIPE_EVENT, event_id=event["id"])
    return True
