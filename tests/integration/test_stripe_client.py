"""The Stripe client's bounds against the fake Stripe (HTTP, Stripe's wire format): a call that
gets no answer within the configured timeout is retried the configured number of times, then
is a 503; Stripe's 500s likewise. What each call sends is tests/unit/test_stripe_calls.py's."""

from __future__ import annotations

import time
import uuid

import pytest

from app.billing.stripe_api import BillingUnavailable, Stripe
from app.settings import Settings
from tests.harness.stripe.server import FakeStripe

CLINIC = uuid.UUID("5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a")


async def test_a_stalled_or_failing_stripe_is_retried_as_configured_then_a_503(
    settings: Settings, stripe: FakeStripe
) -> None:
    bounded = settings.model_copy(
        update={"stripe_timeout_seconds": 0.5, "stripe_max_network_retries": 1}
    )
    client = Stripe(bounded)
    try:
        # Each try waits its timeout, not the stall's 3 s; then the SDK's one retry (its default
        # is none).
        stripe.stall_next(count=2, seconds=3.0, path_prefix="/v1/customers", processed=False)
        started = time.monotonic()
        with pytest.raises(BillingUnavailable):
            await client.create_customer(CLINIC, "Harbour Vets", "rita@harbour.example")
        assert time.monotonic() - started < 3.0
        assert len(stripe.calls("POST", "/v1/customers")) == 2

        stripe.fail_next(count=2, status=500, path_prefix="/v1/customers")
        with pytest.raises(BillingUnavailable):
            await client.create_customer(CLINIC, "Harbour Vets", "rita@harbour.example")
        assert len(stripe.calls("POST", "/v1/customers")) == 4
        assert stripe.customers == {}
    finally:
        await client.close()
