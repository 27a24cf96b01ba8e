"""Driving billing in tests: Stripe's deliveries to the webhook, the job queue's worker, and
reading back what they left (the webhook inbox, the clinic's billing as its owner sees it)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.billing.plans import Plan
from tests.harness import canary
from tests.harness.queue import drain
from tests.harness.stripe.signing import delivery

__all__ = ["BILLING", "PRICES", "WEBHOOK", "billing", "deliver", "drain", "event_row", "stored"]

BILLING = "/api/v1/billing"
WEBHOOK = f"{BILLING}/webhooks/stripe"
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


async def stored(engine: AsyncEngine) -> tuple[int, int]:
    """(rows of ``stripe_events``, procrastinate jobs): everything a delivery may leave."""
    async with engine.connect() as connection:
        events = await connection.scalar(text("SELECT count(*) FROM stripe_events"))
        jobs = await connection.scalar(text("SELECT count(*) FROM procrastinate_jobs"))
    return int(events or 0), int(jobs or 0)


async def event_row(engine: AsyncEngine, event_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT status::text AS status, clinic_id, note, attempts, last_error"
                    " FROM stripe_events WHERE id = :id"
                ),
                {"id": event_id},
            )
        ).one()
    return dict(row._mapping)


async def billing(client: httpx.AsyncClient, actor: Any) -> dict[str, Any]:
    """``GET /api/v1/billing`` as ``actor`` (anything with auth ``headers``: an owner)."""
    response = await client.get(BILLING, headers=actor.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
