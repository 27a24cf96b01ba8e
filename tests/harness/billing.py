"""Driving billing in tests: Stripe's deliveries to the webhook, and the job queue's worker."""

from __future__ import annotations

from typing import Any

import httpx

from app.billing.plans import Plan
from app.queue import run_worker
from app.settings import Settings
from tests.harness import canary
from tests.harness.stripe import delivery

WEBHOOK = "/api/v1/billing/webhooks/stripe"
PRICES = {
    Plan.starter: "price_1VetifyStarterTest000",
    Plan.professional: "price_1VetifyProfessionalTest",
    Plan.enterprise: "price_1VetifyEnterpriseTest0",
}
"""The plans' Stripe prices in every test stage's settings."""


async def deliver(
    client: httpx.AsyncClient,
    event: dict[str, Any],
    *,
    secret: str = canary.STRIPE_WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """POST ``event`` as Stripe delivers it: the raw JSON body signed with the endpoint secret."""
    body, headers = delivery(event, secret, timestamp=timestamp)
    return await client.post(WEBHOOK, content=body, headers=headers)


async def drain(settings: Settings) -> None:
    """Run every job that is due, then return (the worker `vetify worker` runs, not waiting)."""
    await run_worker(settings, wait=False)
