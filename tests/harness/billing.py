"""Driving billing in tests: Stripe's deliveries to the webhook, the job queue's worker, and
reading back what they left (the webhook inbox, the clinic's billing as its owner sees it)."""

from __future__ import annotations

import datetime as dt
import types
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.billing.models import BillingAccount, SubscriptionStatus
from app.billing.plans import DEFAULT_PLAN, Plan
from tests.harness import canary
from tests.harness.queue import drain
from tests.harness.stripe.signing import delivery

__all__ = [
    "BILLING",
    "PRICES",
    "WEBHOOK",
    "AccountStandIn",
    "billing",
    "deliver",
    "drain",
    "event_row",
    "stored",
]

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


class AccountStandIn:
    """The clinic's account row and job queue in place of the database, for unit tests of an
    ``app.billing`` module: its ``find_account`` gives ``account`` (at first a signup's trial
    on the default plan with ``trial_left``; None: no such clinic) and records the locks asked
    for, its ``enqueue`` records the jobs, its clock reads ``now``."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        module: types.ModuleType,
        clinic_id: uuid.UUID,
        now: dt.datetime,
        trial_left: dt.timedelta,
    ) -> None:
        self.account: BillingAccount | None = BillingAccount(
            tenant_id=clinic_id,
            status=SubscriptionStatus.trialing,
            plan=DEFAULT_PLAN,
            trial_ends_at=now + trial_left,
            cancel_at_period_end=False,
        )
        self.locks: list[bool] = []
        self.queued: list[tuple[str, dict[str, Any]]] = []

        async def find_account(session: Any, tenant: Any, *, lock: bool = False) -> Any:
            assert tenant.clinic_id == clinic_id
            self.locks.append(lock)
            return self.account

        async def enqueue(session: Any, task: str, **kwargs: Any) -> None:
            self.queued.append((task, kwargs))

        monkeypatch.setattr(module, "find_account", find_account)
        monkeypatch.setattr(module, "enqueue", enqueue)
        monkeypatch.setattr(module, "utcnow", lambda: now)

    @property
    def row(self) -> BillingAccount:
        assert self.account is not None
        return self.account
