"""Webhook signatures: the ``Stripe-Signature`` header as Stripe computes it, and a whole
signed delivery ready to POST to the app."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any


def _signature(payload: bytes, secret: str, timestamp: int) -> str:
    # Stripe signs "<timestamp>.<raw body>" with HMAC-SHA256 keyed by the endpoint's secret.
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send with ``payload``: ``t=..,v1=..``."""
    return sign_many(payload, [secret], timestamp)


def sign_many(payload: bytes, secrets: Sequence[str], timestamp: int | None = None) -> str:
    """One ``v1`` per secret, as Stripe sends while an endpoint's secret is being rolled."""
    ts = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={ts}", *(f"v1={_signature(payload, s, ts)}" for s in secrets)])


def delivery(
    evt: dict[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a webhook delivery of ``evt``, ready to POST to the app."""
    body = json.dumps(evt, indent=2).encode()  # Stripe's deliveries are pretty-printed JSON
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(body, secret, timestamp),
    }
    return body, headers
