"""Stripe does not promise order or exactly-once delivery: whatever order a subscription's
lifecycle events arrive in, duplicated, or dropped and redelivered later, and whenever the
worker happens to run between them, the clinic ends in the state of the newest subscription."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.auth.models import Role
from app.billing.plans import Plan
from tests.harness.billing import PRICES, deliver, drain
from tests.harness.stripe import events as fake

# (status, price) of the subscription after each step: trial, paid, a failed payment, paid
# again (on a bigger plan), cancelled.
LIFECYCLE = [
    ("trialing", Plan.starter),
    ("active", Plan.starter),
    ("past_due", Plan.starter),
    ("active", Plan.professional),
    ("canceled", Plan.professional),
]


@dataclass(frozen=True)
class Story:
    happened: int  # how many steps of the lifecycle took place before delivery
    order: list[int]  # the events, by index, in the order of first delivery
    duplicates: list[int]  # delivered again right away
    dropped: list[int]  # lost the first time, redelivered at the end
    drain_after: list[bool]  # the worker ran after this delivery


@st.composite
def stories(draw: st.DrawFn) -> Story:
    happened = draw(st.integers(min_value=1, max_value=len(LIFECYCLE)))
    count = 2 * happened + 1  # per step a subscription event and an invoice, plus checkout
    order = draw(st.permutations(range(count)))
    duplicates = draw(st.lists(st.sampled_from(order), max_size=3))
    dropped = draw(st.lists(st.sampled_from(order), max_size=3, unique=True))
    drain_after = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    return Story(happened, list(order), duplicates, dropped, drain_after)


def _lifecycle(clinic_id: str, customer: str, happened: int) -> tuple[list[dict], dict]:
    """The events of the first ``happened`` steps, and the subscription as Stripe has it now."""
    sub_id = fake.new_id("sub_")
    created = int(dt.datetime.now(dt.UTC).timestamp()) - 3600
    trial_end = created + 14 * 86_400
    snapshots: list[dict[str, Any]] = [
        fake.subscription(
            id=sub_id,
            customer=customer,
            status=status,
            price=PRICES[plan],
            clinic_id=clinic_id,
            trial_end=trial_end if status == "trialing" else None,
            created=created,
            current_period_end=created + (step + 1) * 30 * 86_400,
        )
        for step, (status, plan) in enumerate(LIFECYCLE[:happened])
    ]
    session = fake.checkout_session(
        customer=customer, subscription=sub_id, client_reference_id=clinic_id
    )
    events = [fake.event("checkout.session.completed", session)]
    for step, snapshot in enumerate(snapshots):
        kind = {0: "created", happened - 1: "updated"}.get(step, "updated")
        if snapshot["status"] == "canceled":
            kind = "deleted"
        events.append(fake.event(f"customer.subscription.{kind}", snapshot))
        paid = snapshot["status"] in ("active", "trialing")
        invoice = fake.invoice(
            customer=customer, subscription=sub_id, status="paid" if paid else "open"
        )
        events.append(fake.event("invoice.paid" if paid else "invoice.payment_failed", invoice))
    return events, snapshots[-1]


@settings(
    max_examples=20,
    deadline=None,
    # The same examples every run: the coverage ratchet counts the lines they reach.
    derandomize=True,
    # One app and database for every example: each example has a clinic of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(story=stories())
async def test_any_delivery_order_ends_in_the_newest_subscription_state(
    story: Story, client, settings, world, stripe
) -> None:
    clinic = await world.clinic((Role.owner,))
    customer = fake.new_id("cus_")
    events, newest = _lifecycle(str(clinic.id), customer, story.happened)
    stripe.put_subscription(newest)

    deliveries = [i for i in story.order if i not in story.dropped]
    for position, index in enumerate(deliveries):
        for _ in range(1 + story.duplicates.count(index)):
            assert (await deliver(client, events[index])).status_code == 200
        if story.drain_after[position]:
            await drain(settings)
    for index in story.dropped:  # Stripe's redelivery of what was lost
        assert (await deliver(client, events[index])).status_code == 200
    await drain(settings)

    state = (await client.get("/api/v1/billing", headers=clinic.owner.headers)).json()
    item = newest["items"]["data"][0]
    status, plan = LIFECYCLE[story.happened - 1]
    assert state["status"] == newest["status"] == status
    assert state["plan"] == plan
    assert state["subscribed"] is True
    assert (
        dt.datetime.fromisoformat(state["current_period_end"]).timestamp()
        == (item["current_period_end"])
    )
    assert state["read_only"] is (status == "canceled")
    assert (state["past_due_since"] is not None) is (status == "past_due")
