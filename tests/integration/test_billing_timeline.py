"""Billing over time: trial, dunning and grace, cancellation, as sequences of Stripe's events
with the app's clock moved on between them.

A single event proves little about dunning: whether the grace period starts at the first failed
payment, whether a later failure restarts it, when read-only begins and when it ends are all
facts about a sequence. Each step here is a signed delivery to the webhook, the job queue run,
then the clinic as its owner sees it (``GET /api/v1/billing``, and a write: 201 or 402). The
clock is the app's own (``app.kit.clock``), frozen and moved by hand; Stripe is the fake, which
the job reads the subscription from. Delivery order is test_billing_ordering's subject; here
every event is delivered in order, once.

The Hypothesis test at the end walks random sequences of Stripe's statuses and clock steps and
checks every step against :class:`Rules`, a model of docs/billing.md written apart from
``app/billing``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.models import Role
from app.billing.plans import Plan
from app.settings import Settings
from tests.harness import api
from tests.harness.billing import PRICES, billing, deliver, drain
from tests.harness.clock import Clock
from tests.harness.plugin import asgi_client
from tests.harness.stripe import events as fake
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import Actor, ClinicWorld, World

GRACE = dt.timedelta(days=Settings.model_fields["billing_grace_days"].default)
TRIAL = dt.timedelta(days=Settings.model_fields["billing_trial_days"].default)
MINUTE = dt.timedelta(minutes=1)
CUSTOMER = {"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"}


# One database and app for the module: every test and example has a clinic of its own.
@pytest.fixture(scope="module")
async def module_client(module_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(module_app) as http:
        yield http


@dataclass
class Subscriber:
    """A clinic, its Stripe customer and one subscription, driven step by step."""

    client: httpx.AsyncClient
    world: World
    settings: Settings
    stripe: FakeStripe
    clock: Clock
    clinic: ClinicWorld
    customer: str = field(default_factory=lambda: fake.new_id("cus_"))
    subscription: str = field(default_factory=lambda: fake.new_id("sub_"))
    created: int = 0

    @classmethod
    async def open(cls, client, world, settings, stripe, clock) -> Subscriber:
        clinic = await world.clinic((Role.owner,))
        found = cls(client, world, settings, stripe, clock, clinic)
        stripe.put_customer(
            {**fake.official("customer"), "id": found.customer}
            | {"metadata": {"clinic_id": str(clinic.id)}}
        )
        found.created = int(clock.now.timestamp())
        return found

    async def stripe_says(
        self,
        status: str,
        event: str = "customer.subscription.updated",
        *,
        cancel_at_period_end: bool = False,
        trial_end: dt.datetime | None = None,
    ) -> None:
        """Stripe's subscription is now ``status``; it tells us with ``event``."""
        sub = fake.subscription(
            id=self.subscription,
            customer=self.customer,
            status=status,
            price=PRICES[Plan.starter],
            clinic_id=str(self.clinic.id),
            created=self.created,
            trial_end=int(trial_end.timestamp()) if trial_end else None,
            current_period_end=int((self.clock.now + dt.timedelta(days=30)).timestamp()),
            cancel_at_period_end=cancel_at_period_end,
        )
        self.stripe.put_subscription(sub)
        if event.startswith("invoice."):
            paid = event == "invoice.paid"
            obj = fake.invoice(
                customer=self.customer,
                subscription=self.subscription,
                status="paid" if paid else "open",
            )
        else:
            obj = sub
        assert (await deliver(self.client, fake.event(event, obj))).status_code == 200
        await drain(self.settings)

    async def owner(self) -> Actor:
        """The owner with a token issued now (the clock may have passed an older one's end)."""
        return await self.world.actor(self.clinic.id, self.clinic.owner.user)

    async def state(self) -> dict[str, Any]:
        """What the owner sees, and whether a write goes through (``writes``)."""
        owner = await self.owner()
        seen = await billing(self.client, owner)
        write = await self.client.post("/api/v1/customers", json=CUSTOMER, headers=owner.headers)
        if write.status_code != 201:
            api.assert_problem(write, 402, "payment-required")
        seen["writes"] = write.status_code == 201
        for name in ("trial_ends_at", "past_due_since", "grace_ends_at"):
            seen[name] = dt.datetime.fromisoformat(seen[name]) if seen[name] else None
        return seen


@pytest.fixture
async def subscriber(module_client, module_world, module_settings, stripe, clock) -> Subscriber:
    return await Subscriber.open(module_client, module_world, module_settings, stripe, clock)


@pytest.fixture
async def paying(subscriber: Subscriber) -> Subscriber:
    """A clinic whose first payment went through."""
    await subscriber.stripe_says("active", "invoice.paid")
    return subscriber


# -- timelines ------------------------------------------------------------------------------------
async def test_the_signup_trial_writes_until_its_last_moment(subscriber: Subscriber) -> None:
    start = subscriber.clock.now
    state = await subscriber.state()
    assert (state["status"], state["subscribed"], state["writes"]) == ("trialing", False, True)
    assert state["trial_ends_at"] == start + TRIAL

    subscriber.clock.advance(TRIAL - MINUTE)
    assert (await subscriber.state())["writes"] is True
    subscriber.clock.advance(MINUTE)
    state = await subscriber.state()
    assert (state["read_only"], state["writes"]) == (True, False)

    # Subscribing afterwards (a trialing subscription Stripe runs) writes again at once.
    await subscriber.stripe_says("trialing", trial_end=subscriber.clock.now + TRIAL)
    state = await subscriber.state()
    assert (state["status"], state["subscribed"], state["writes"]) == ("trialing", True, True)


async def test_a_trial_stripe_runs_writes_past_the_signup_trial_until_stripe_ends_it(
    subscriber: Subscriber,
) -> None:
    clock = subscriber.clock
    await subscriber.stripe_says("trialing", "customer.subscription.created", trial_end=clock.now)
    clock.advance(TRIAL + dt.timedelta(days=3))
    assert (await subscriber.state())["writes"] is True  # Stripe says when its trial ends

    # The trial ends without a payment method: Stripe's status, and read-only from that event.
    await subscriber.stripe_says("incomplete_expired")
    state = await subscriber.state()
    assert (state["status"], state["writes"], state["grace_ends_at"]) == (
        "incomplete_expired",
        False,
        None,
    )


async def test_grace_starts_at_the_first_failure_and_later_failures_do_not_restart_it(
    paying: Subscriber,
) -> None:
    clock = paying.clock
    clock.advance(dt.timedelta(days=30))

    failed_at = clock.now
    await paying.stripe_says("past_due", "invoice.payment_failed")
    state = await paying.state()
    assert (state["status"], state["past_due_since"]) == ("past_due", failed_at)
    assert (state["grace_ends_at"], state["writes"]) == (failed_at + GRACE, True)

    # Stripe retries the card on day 3 and day 5 and fails again; the subscription is updated
    # too. None of it moves the start of grace.
    for day in (3, 5):
        clock.now = failed_at + dt.timedelta(days=day)
        await paying.stripe_says("past_due", "invoice.payment_failed")
        await paying.stripe_says("past_due", "customer.subscription.updated")
        state = await paying.state()
        assert (state["past_due_since"], state["grace_ends_at"]) == (failed_at, failed_at + GRACE)
        assert state["writes"] is True

    # Read-only begins the moment grace ends, not a minute later, and a failure after it
    # changes nothing.
    clock.now = failed_at + GRACE - MINUTE
    assert (await paying.state())["writes"] is True
    clock.now = failed_at + GRACE
    state = await paying.state()
    assert (state["read_only"], state["writes"]) == (True, False)
    clock.advance(dt.timedelta(days=1))
    await paying.stripe_says("past_due", "invoice.payment_failed")
    state = await paying.state()
    assert (state["past_due_since"], state["writes"]) == (failed_at, False)

    # Paid: writable at once, grace forgotten.
    await paying.stripe_says("active", "invoice.paid")
    state = await paying.state()
    assert (state["status"], state["past_due_since"], state["grace_ends_at"]) == (
        "active",
        None,
        None,
    )
    assert state["writes"] is True

    # The next failure, a month on, starts a grace period of its own.
    clock.advance(dt.timedelta(days=30))
    again = clock.now
    await paying.stripe_says("past_due", "invoice.payment_failed")
    state = await paying.state()
    assert (state["past_due_since"], state["grace_ends_at"], state["writes"]) == (
        again,
        again + GRACE,
        True,
    )


async def test_dunning_that_gives_up_is_read_only_at_once_even_within_grace(
    paying: Subscriber,
) -> None:
    clock = paying.clock
    await paying.stripe_says("past_due", "invoice.payment_failed")
    clock.advance(dt.timedelta(days=2))
    await paying.stripe_says("unpaid", "customer.subscription.updated")
    state = await paying.state()
    assert (state["status"], state["writes"], state["past_due_since"]) == ("unpaid", False, None)
    await paying.stripe_says("active", "invoice.paid")
    assert (await paying.state())["writes"] is True


async def test_a_cancellation_writes_until_the_period_ends_then_stops(
    paying: Subscriber,
) -> None:
    clock = paying.clock
    await paying.stripe_says("active", cancel_at_period_end=True)
    state = await paying.state()
    assert (state["cancel_at_period_end"], state["writes"]) == (True, True)

    clock.advance(dt.timedelta(days=30))
    await paying.stripe_says("canceled", "customer.subscription.deleted")
    state = await paying.state()
    assert (state["status"], state["writes"]) == ("canceled", False)
    # Time passing brings nothing back.
    clock.advance(dt.timedelta(days=365))
    assert (await paying.state())["writes"] is False


# -- any sequence, against a model of the rules ---------------------------------------------------
WRITABLE_ALWAYS = {"active"}
WRITABLE_NEVER = {"unpaid", "canceled", "paused", "incomplete_expired"}


@dataclass
class Rules:
    """docs/billing.md, "States": who may write, and when grace starts and ends."""

    now: dt.datetime
    trial_ends_at: dt.datetime
    status: str = "trialing"
    subscribed: bool = False
    past_due_since: dt.datetime | None = None

    def stripe_says(self, status: str, trial_end: dt.datetime | None) -> None:
        self.subscribed = True
        # Grace counts from the first time the subscription was seen past due.
        if status == "past_due":
            self.past_due_since = self.past_due_since or self.now
        else:
            self.past_due_since = None
        self.status = status
        if trial_end is not None:
            self.trial_ends_at = trial_end

    @property
    def grace_ends_at(self) -> dt.datetime | None:
        return self.past_due_since + GRACE if self.past_due_since else None

    @property
    def writes(self) -> bool:
        if self.status in WRITABLE_ALWAYS:
            return True
        if self.status in WRITABLE_NEVER:
            return False
        if self.status == "past_due":
            assert self.grace_ends_at is not None
            return self.now < self.grace_ends_at
        if self.status == "trialing" and self.subscribed:
            return True
        return self.now < self.trial_ends_at  # our own trial, or `incomplete` within it


STATUSES = [
    *["past_due"] * 4,  # dunning is where the timing rules are: drawn most often
    *["active"] * 2,
    "trialing",
    "unpaid",
    "canceled",
    "incomplete",
    "paused",
]
EVENTS = {
    "active": ["invoice.paid", "customer.subscription.updated"],
    "past_due": ["invoice.payment_failed", "customer.subscription.updated"],
    "canceled": ["customer.subscription.deleted"],
    "paused": ["customer.subscription.paused"],
}
"""Which events announce a status (any subscription event may; these are Stripe's usual)."""
STEPS: list[dt.timedelta | str] = [
    dt.timedelta(minutes=1),
    dt.timedelta(hours=1),
    dt.timedelta(days=1),
    dt.timedelta(days=3),
    TRIAL,
    # To the moments the rules turn on (the model's, when it has one): where an off-by-one is.
    "to the end of grace",
    "to a minute before the end of grace",
    "to the end of the trial",
]


def _moved(rules: Rules, step: dt.timedelta | str) -> dt.datetime:
    """The clock after ``step``; a step to a moment that is not ahead of now lets a minute pass."""
    if isinstance(step, dt.timedelta):
        return rules.now + step
    moment = {
        "to the end of grace": rules.grace_ends_at,
        "to a minute before the end of grace": rules.grace_ends_at and rules.grace_ends_at - MINUTE,
        "to the end of the trial": rules.trial_ends_at,
    }[step]
    return moment if moment is not None and moment > rules.now else rules.now + MINUTE


@st.composite
def happenings(draw: st.DrawFn) -> tuple[str, Any, str]:
    if draw(st.booleans()):
        return ("time passes", draw(st.sampled_from(STEPS)), "")
    status = draw(st.sampled_from(STATUSES))
    event = draw(st.sampled_from(EVENTS.get(status, ["customer.subscription.updated"])))
    return ("stripe says", status, event)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same sequences every run: the coverage ratchet counts their lines
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=st.lists(happenings(), min_size=2, max_size=8))
async def test_any_sequence_of_events_and_time_follows_the_rules(
    story: list[tuple[str, Any, str]], module_client, module_world, module_settings, stripe, clock
) -> None:
    clock.now = dt.datetime.now(dt.UTC)
    subscriber = await Subscriber.open(module_client, module_world, module_settings, stripe, clock)
    rules = Rules(now=clock.now, trial_ends_at=clock.now + TRIAL)

    for what, detail, event in story:
        if what == "time passes":
            clock.now = _moved(rules, detail)
        else:
            trial_end = clock.now + TRIAL if detail == "trialing" else None
            await subscriber.stripe_says(detail, event, trial_end=trial_end)
            rules.stripe_says(detail, trial_end)
        rules.now = clock.now
        state = await subscriber.state()
        assert {
            "status": state["status"],
            "subscribed": state["subscribed"],
            "past_due_since": state["past_due_since"],
            "grace_ends_at": state["grace_ends_at"],
            "writes": state["writes"],
            "read_only": state["read_only"],
        } == {
            "status": rules.status,
            "subscribed": rules.subscribed,
            "past_due_since": rules.past_due_since,
            "grace_ends_at": rules.grace_ends_at,
            "writes": rules.writes,
            "read_only": not rules.writes,
        }, f"after {what} {detail} {event}".strip()
