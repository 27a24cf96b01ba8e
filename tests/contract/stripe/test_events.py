"""Every event type billing handles, from Stripe's own objects, through the whole path.

Each test builds the event as Stripe sends it (tests/harness/stripe/events.py starts every
object from Stripe's published example), delivers it signed to the webhook, runs the job queue,
then reads the clinic's billing as its owner. The fake Stripe API holds the subscription as
Stripe has it now: the handler must retrieve it (the event's copy may be stale), so a test whose
Stripe state differs from the event's copy shows which one the handler trusted.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.billing.plans import Plan
from app.billing.sync import HANDLED
from app.settings import Settings
from tests.harness.billing import PRICES, billing, deliver, drain, event_row
from tests.harness.stripe.events import (
    checkout_session,
    event,
    invoice,
    new_id,
    official,
    subscription,
)
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import World

DAY = 24 * 3600


@dataclass(frozen=True)
class Scenario:
    status: str  # the subscription's status at Stripe when the job retrieves it
    plan: Plan
    read_only: bool
    trial: bool = False  # a Stripe trial (trial_end set)


SCENARIOS: dict[str, Scenario] = {
    "checkout.session.completed": Scenario("active", Plan.professional, read_only=False),
    "customer.subscription.created": Scenario("trialing", Plan.professional, False, trial=True),
    "customer.subscription.updated": Scenario("active", Plan.enterprise, read_only=False),
    "customer.subscription.deleted": Scenario("canceled", Plan.professional, read_only=True),
    "customer.subscription.trial_will_end": Scenario(
        "trialing", Plan.enterprise, read_only=False, trial=True
    ),
    "customer.subscription.paused": Scenario("paused", Plan.professional, read_only=True),
    "customer.subscription.resumed": Scenario("active", Plan.professional, read_only=False),
    "invoice.paid": Scenario("active", Plan.enterprise, read_only=False),
    # Past due but inside the grace period: still writable, the grace end is shown.
    "invoice.payment_failed": Scenario("past_due", Plan.professional, read_only=False),
}


def stripe_customer(clinic_id: uuid.UUID | None) -> dict[str, Any]:
    obj = official("customer")
    obj.update(
        id=new_id("cus_", 14),
        metadata={"clinic_id": str(clinic_id)} if clinic_id else {},
        discount=None,
        livemode=False,
    )
    return obj


def envelope(kind: str, sub: dict[str, Any], clinic_id: uuid.UUID) -> dict[str, Any]:
    """The event of ``kind`` about ``sub``, its object built from Stripe's example."""
    if kind == "checkout.session.completed":
        obj = checkout_session(
            customer=sub["customer"], subscription=sub["id"], client_reference_id=str(clinic_id)
        )
    elif kind.startswith("invoice."):
        status = "paid" if kind == "invoice.paid" else "open"
        obj = invoice(customer=sub["customer"], subscription=sub["id"], status=status)
    else:
        obj = sub
    return event(kind, obj)


def moment(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def test_every_handled_type_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(HANDLED)


@pytest.mark.parametrize("kind", sorted(HANDLED))
async def test_a_handled_event_sets_the_clinics_billing(
    kind: str,
    client: httpx.AsyncClient,
    world: World,
    stripe: FakeStripe,
    settings: Settings,
    superuser_engine: AsyncEngine,
) -> None:
    scenario = SCENARIOS[kind]
    clinic = await world.clinic()
    before = await billing(client, clinic.owner)
    assert (before["status"], before["plan"], before["subscribed"]) == (
        "trialing",
        "starter",
        False,
    )
    customer = stripe.put_customer(stripe_customer(clinic.id))
    now = int(time.time())
    sub = stripe.put_subscription(
        subscription(
            customer=customer["id"],
            status=scenario.status,
            price=PRICES[scenario.plan],
            clinic_id=str(clinic.id),
            trial_end=now + 3 * DAY if scenario.trial else None,
            current_period_end=now + 30 * DAY,
        )
    )
    evt = envelope(kind, sub, clinic.id)

    started = dt.datetime.now(dt.UTC)
    response = await deliver(client, evt)
    assert response.status_code == 200, response.text
    await drain(settings)
    finished = dt.datetime.now(dt.UTC)

    row = await event_row(superuser_engine, evt["id"])
    assert (row["status"], row["clinic_id"], row["note"]) == ("processed", clinic.id, None)
    # Whatever the event carried, the handler asked Stripe for the subscription.
    assert len(stripe.calls("GET", f"/v1/subscriptions/{sub['id']}")) == 1
    after = await billing(client, clinic.owner)
    assert after["status"] == scenario.status
    assert after["plan"] == scenario.plan.value
    assert after["read_only"] is scenario.read_only
    assert after["subscribed"] is True
    assert moment(after["current_period_end"]) == at(now + 30 * DAY)
    assert after["cancel_at_period_end"] is False
    if scenario.trial:
        assert moment(after["trial_ends_at"]) == at(now + 3 * DAY)
    if scenario.status == "past_due":
        since = moment(after["past_due_since"])
        assert since is not None
        assert started <= since <= finished
        assert moment(after["grace_ends_at"]) == since + dt.timedelta(
            days=settings.billing_grace_days
        )
    else:
        assert (after["past_due_since"], after["grace_ends_at"]) == (None, None)
    will_end = moment(after["trial_will_end_at"])
    if kind == "customer.subscription.trial_will_end":
        assert will_end is not None
        assert started <= will_end <= finished
    else:
        assert will_end is None


async def test_the_subscription_at_stripe_wins_over_the_events_copy(
    client: httpx.AsyncClient,
    world: World,
    stripe: FakeStripe,
    settings: Settings,
    superuser_engine: AsyncEngine,
) -> None:
    # `updated` (active, professional) arrives after the subscription was cancelled at Stripe.
    clinic = await world.clinic()
    customer = stripe.put_customer(stripe_customer(clinic.id))
    stale = subscription(
        customer=customer["id"],
        status="active",
        price=PRICES[Plan.professional],
        clinic_id=str(clinic.id),
    )
    at_stripe = copy.deepcopy(stale)
    at_stripe.update(status="canceled", ended_at=int(time.time()))
    at_stripe["items"]["data"][0]["price"]["id"] = PRICES[Plan.enterprise]
    stripe.put_subscription(at_stripe)
    evt = event("customer.subscription.updated", stale)

    assert (await deliver(client, evt)).status_code == 200
    await drain(settings)

    assert (await event_row(superuser_engine, evt["id"]))["status"] == "processed"
    after = await billing(client, clinic.owner)
    assert (after["status"], after["plan"], after["read_only"]) == ("canceled", "enterprise", True)


async def test_an_unhandled_type_is_stored_and_ignored(
    client: httpx.AsyncClient,
    world: World,
    stripe: FakeStripe,
    settings: Settings,
    superuser_engine: AsyncEngine,
) -> None:
    clinic = await world.clinic()
    before = await billing(client, clinic.owner)
    evt = event("customer.created", stripe_customer(clinic.id))

    assert (await deliver(client, evt)).status_code == 200
    await drain(settings)

    row = await event_row(superuser_engine, evt["id"])
    assert (row["status"], row["clinic_id"]) == ("ignored", None)
    assert row["note"] == "not a type billing handles"
    assert stripe.requests == []  # nothing asked of Stripe
    assert await billing(client, clinic.owner) == before


@pytest.mark.parametrize(
    "kind", ["customer.subscription.updated", "invoice.paid", "customer.subscription.deleted"]
)
async def test_an_event_about_another_customer_is_ignored(
    kind: str,
    client: httpx.AsyncClient,
    world: World,
    stripe: FakeStripe,
    settings: Settings,
    superuser_engine: AsyncEngine,
) -> None:
    # Same Stripe account, another product's customer: no clinic in its metadata or the
    # subscription's.
    clinic = await world.clinic()
    before = await billing(client, clinic.owner)
    stranger = stripe.put_customer(stripe_customer(None))
    sub = stripe.put_subscription(
        subscription(customer=stranger["id"], status="active", price=PRICES[Plan.enterprise])
    )
    evt = envelope(kind, sub, clinic.id)

    assert (await deliver(client, evt)).status_code == 200
    await drain(settings)

    row = await event_row(superuser_engine, evt["id"])
    assert (row["status"], row["clinic_id"]) == ("ignored", None)
    assert row["note"] == "not a Vetify clinic's subscription"
    assert stripe.calls("GET", "/v1/subscriptions") == []
    assert await billing(client, clinic.owner) == before
