"""Applying Stripe's events to a clinic's account (`app.billing.sync`), step by step and
without the database: which clinic an event is about, which events change nothing, and which
of the subscription's fields the account takes. The whole path, through the webhook, the job
and the database, is tests/integration/test_billing*.py's; this one asserts every field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from app.billing import sync
from app.billing.account import MAIL_TRIAL_ENDING
from app.billing.models import EventStatus, SubscriptionStatus
from app.billing.plans import Plan
from app.billing.sync import Outcome, apply_event
from app.settings import Settings
from tests.harness.billing import PRICES, AccountStandIn
from tests.harness.stripe import events as fake

CLINIC = uuid.UUID("7b4a0f3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b")
NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
CREATED = int((NOW - dt.timedelta(days=40)).timestamp())
SETTINGS = Settings(
    _env_file=None, **{f"stripe_price_{plan.value}": price for plan, price in PRICES.items()}
)


def at(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


class Stripe:
    """What the handler reads from Stripe: its subscriptions and customers, by id; every read
    recorded. An id it does not hold is a KeyError, as a failing job."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []

    async def subscription(self, subscription_id: str) -> dict[str, Any]:
        self.reads.append(subscription_id)
        return self.subscriptions[subscription_id]

    async def customer(self, customer_id: str) -> dict[str, Any]:
        self.reads.append(customer_id)
        return self.customers[customer_id]


class Session:
    async def flush(self) -> None:
        self.flushed = True


class Clinic(AccountStandIn):
    """The clinic's side: its account row, the tenant entered, the locks and the jobs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch, sync, CLINIC, NOW, dt.timedelta(days=3))
        self.entered: list[uuid.UUID] = []

        async def enter_tenant(session: Session, clinic_id: uuid.UUID) -> None:
            self.entered.append(clinic_id)

        monkeypatch.setattr(sync, "enter_tenant", enter_tenant)


@pytest.fixture
def clinic(monkeypatch: pytest.MonkeyPatch) -> Clinic:
    return Clinic(monkeypatch)


@pytest.fixture
def stripe() -> Stripe:
    return Stripe()


def subscription(stripe: Stripe, **changes: Any) -> dict[str, Any]:
    """A subscription of the clinic's, professional, in Stripe (the fake's builder)."""
    fields: dict[str, Any] = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "active",
        "price": PRICES[Plan.professional],
        "clinic_id": str(CLINIC),
        "created": CREATED,
    }
    sub = fake.subscription(**(fields | changes))
    stripe.subscriptions[sub["id"]] = sub
    return sub


async def apply(stripe: Stripe, kind: str, obj: dict[str, Any]) -> Outcome:
    return await apply_event(Session(), SETTINGS, stripe, fake.event(kind, obj))  # type: ignore[arg-type]


# -- which clinic, which events --------------------------------------------------------------------
async def test_a_subscription_event_names_its_clinic_in_its_metadata(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe)
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert clinic.entered == [CLINIC]
    assert clinic.locks == [True]  # the account row is held while Stripe is read
    assert stripe.reads == ["sub_1"]  # no customer look-up: the event named its clinic


async def test_without_metadata_the_clinic_is_the_one_the_stripe_customer_names(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, clinic_id=None)
    stripe.customers["cus_1"] = {"id": "cus_1", "metadata": {"clinic_id": str(CLINIC)}}
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert stripe.reads == ["cus_1", "sub_1"]
    assert clinic.account is not None
    assert clinic.account.plan is Plan.professional


async def test_a_subscription_no_vetify_clinic_owns_changes_nothing(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, clinic_id=None)
    stripe.customers["cus_1"] = {"id": "cus_1", "metadata": {}}
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(EventStatus.ignored, note="not a Vetify clinic's subscription")
    # Nor with no customer at all: Stripe is not asked about one.
    sub["customer"] = None
    outcome = await apply(stripe, "customer.subscription.deleted", sub)
    assert outcome == Outcome(EventStatus.ignored, note="not a Vetify clinic's subscription")
    assert stripe.reads == ["cus_1"]
    assert clinic.entered == []


async def test_a_completed_subscription_checkout_applies_its_subscription(
    clinic: Clinic, stripe: Stripe
) -> None:
    subscription(stripe)
    session = fake.checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id=str(CLINIC)
    )
    session["metadata"] = {}
    outcome = await apply(stripe, "checkout.session.completed", session)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert stripe.reads == ["sub_1"]
    assert clinic.account is not None
    assert clinic.account.stripe_subscription_id == "sub_1"


@pytest.mark.parametrize(
    ("mode", "subscription_id"), [("payment", "sub_1"), ("subscription", None)]
)
async def test_a_checkout_that_is_not_a_subscriptions_is_ignored(
    clinic: Clinic, stripe: Stripe, mode: str, subscription_id: str | None
) -> None:
    subscription(stripe)
    session = fake.checkout_session(
        customer="cus_1",
        subscription=subscription_id,
        client_reference_id=str(CLINIC),
        mode=mode,
    )
    outcome = await apply(stripe, "checkout.session.completed", session)
    assert outcome == Outcome(EventStatus.ignored, note="not a subscription checkout")
    assert (stripe.reads, clinic.entered) == ([], [])


async def test_a_subscriptions_invoice_names_its_clinic_in_the_subscription_details(
    clinic: Clinic, stripe: Stripe
) -> None:
    subscription(stripe, status="past_due")
    invoice = fake.invoice(customer="cus_1", subscription="sub_1", status="open")
    invoice["parent"]["subscription_details"]["metadata"] = {"clinic_id": str(CLINIC)}
    outcome = await apply(stripe, "invoice.payment_failed", invoice)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert stripe.reads == ["sub_1"]  # the subscription's details named the clinic
    assert clinic.account is not None
    assert clinic.account.status is SubscriptionStatus.past_due


async def test_an_invoice_of_no_subscription_is_ignored(clinic: Clinic, stripe: Stripe) -> None:
    invoice = fake.invoice(customer="cus_1", subscription="sub_1", status="paid")
    invoice["parent"] = None  # a one-off invoice
    outcome = await apply(stripe, "invoice.paid", invoice)
    assert outcome == Outcome(EventStatus.ignored, note="not a subscription's invoice")
    assert stripe.reads == []


async def test_an_event_for_a_clinic_with_no_account_or_another_customer_is_refused(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe)
    assert clinic.account is not None
    clinic.account.stripe_customer_id = "cus_other"
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(
        EventStatus.ignored, CLINIC, "the subscription's customer is not the clinic's"
    )
    assert clinic.account.status is SubscriptionStatus.trialing
    clinic.account = None
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(EventStatus.ignored, CLINIC, "no such clinic")


async def test_a_subscription_naming_another_clinic_is_refused(
    clinic: Clinic, stripe: Stripe
) -> None:
    """A checkout of this clinic for a subscription whose metadata names another."""
    subscription(stripe, clinic_id=str(uuid.UUID(int=7)))
    session = fake.checkout_session(
        customer="cus_1", subscription="sub_1", client_reference_id=str(CLINIC)
    )
    outcome = await apply(stripe, "checkout.session.completed", session)
    assert outcome == Outcome(EventStatus.ignored, CLINIC, "the subscription names another clinic")
    assert clinic.row.stripe_subscription_id is None


async def test_stripes_trial_notice_mails_the_owners_of_a_clinic_on_trial_only(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, status="trialing", trial_end=int(NOW.timestamp()) + 3 * 86_400)
    await apply(stripe, "customer.subscription.updated", sub)
    assert clinic.queued == []  # only Stripe's notice mails
    await apply(stripe, "customer.subscription.trial_will_end", sub)
    assert clinic.queued == [(MAIL_TRIAL_ENDING, {"clinic_id": str(CLINIC)})]


async def test_the_trial_notice_of_an_older_subscription_mails_no_one(
    clinic: Clinic, stripe: Stripe
) -> None:
    older = subscription(stripe, id="sub_old", status="trialing", trial_end=CREATED + 86_400)
    assert clinic.account is not None
    clinic.account.stripe_subscription_id = "sub_new"
    clinic.account.subscription_created_at = at(CREATED + 60)
    outcome = await apply(stripe, "customer.subscription.trial_will_end", older)
    assert outcome == Outcome(
        EventStatus.processed, CLINIC, "an older subscription than the clinic's own"
    )
    assert clinic.queued == []


# -- what the account takes ------------------------------------------------------------------------
async def test_the_account_takes_the_subscriptions_fields(clinic: Clinic, stripe: Stripe) -> None:
    trial_end, period_end = CREATED + 14 * 86_400, CREATED + 44 * 86_400
    sub = subscription(
        stripe,
        status="trialing",
        trial_end=trial_end,
        current_period_end=period_end,
        cancel_at_period_end=True,
    )
    assert (await apply(stripe, "customer.subscription.created", sub)).note is None
    account = clinic.account
    assert account is not None
    assert account.stripe_customer_id == "cus_1"
    assert account.stripe_subscription_id == "sub_1"
    assert account.subscription_created_at == at(CREATED)
    assert account.status is SubscriptionStatus.trialing
    assert account.trial_ends_at == at(trial_end)
    assert account.current_period_end == at(period_end)
    assert account.cancel_at_period_end is True
    assert account.past_due_since is None
    assert account.synced_at == NOW
    assert account.plan is Plan.professional


async def test_the_period_ends_with_the_subscriptions_last_item(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, current_period_end=CREATED + 86_400)
    later = dict(sub["items"]["data"][0], current_period_end=CREATED + 2 * 86_400)
    unset = dict(sub["items"]["data"][0], current_period_end=None)
    sub["items"]["data"] += [later, unset]
    await apply(stripe, "customer.subscription.updated", sub)
    assert clinic.account is not None
    assert clinic.account.current_period_end == at(CREATED + 2 * 86_400)
    assert clinic.account.plan is Plan.professional  # the first item's price


async def test_a_subscription_without_items_keeps_the_plan_and_has_no_period(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe)
    sub["items"]["data"] = []
    assert clinic.account is not None
    clinic.account.current_period_end = NOW
    assert (await apply(stripe, "customer.subscription.updated", sub)).note is None
    assert (clinic.account.plan, clinic.account.current_period_end) == (Plan.starter, None)
    assert clinic.account.status is SubscriptionStatus.active


async def test_a_price_no_plan_has_keeps_the_plan_and_still_syncs(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, price="price_1SomeoneElsesPrice0000")
    outcome = await apply(stripe, "customer.subscription.updated", sub)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert clinic.account is not None
    assert (clinic.account.plan, clinic.account.status) == (Plan.starter, SubscriptionStatus.active)


async def test_without_a_trial_end_the_account_keeps_its_own(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe)
    await apply(stripe, "customer.subscription.updated", sub)
    assert clinic.account is not None
    assert clinic.account.trial_ends_at == NOW + dt.timedelta(days=3)
    assert clinic.account.cancel_at_period_end is False


async def test_the_grace_period_counts_from_the_first_past_due_and_ends_with_it(
    clinic: Clinic, stripe: Stripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = subscription(stripe, status="past_due")
    await apply(stripe, "customer.subscription.updated", sub)
    account = clinic.account
    assert account is not None
    assert account.past_due_since == NOW

    later = NOW + dt.timedelta(days=2)
    monkeypatch.setattr(sync, "utcnow", lambda: later)
    await apply(stripe, "customer.subscription.updated", sub)  # a second failure: not restarted
    assert (account.past_due_since, account.synced_at) == (NOW, later)

    sub["status"] = "active"
    await apply(stripe, "customer.subscription.updated", sub)
    assert (account.status, account.past_due_since) == (SubscriptionStatus.active, None)


@pytest.mark.parametrize(
    ("tracked_created", "applied"),
    [
        (CREATED + 60, False),  # the clinic subscribed again after this one
        (CREATED, True),  # as old as the tracked one: Stripe's newest state of it is taken
        (None, True),  # the tracked one's age is unknown
    ],
)
async def test_an_older_subscription_than_the_clinics_own_changes_nothing(
    clinic: Clinic, stripe: Stripe, tracked_created: int | None, applied: bool
) -> None:
    older = subscription(stripe, id="sub_old", status="canceled")
    account = clinic.account
    assert account is not None
    account.stripe_subscription_id = "sub_new"
    account.subscription_created_at = at(tracked_created) if tracked_created else None
    outcome = await apply(stripe, "customer.subscription.deleted", older)
    note = None if applied else "an older subscription than the clinic's own"
    assert outcome == Outcome(EventStatus.processed, CLINIC, note)
    assert account.stripe_subscription_id == ("sub_old" if applied else "sub_new")
    assert account.status is (
        SubscriptionStatus.canceled if applied else SubscriptionStatus.trialing
    )


async def test_a_checkout_with_its_subscription_and_customer_expanded_is_read_alike(
    clinic: Clinic, stripe: Stripe
) -> None:
    sub = subscription(stripe, clinic_id=None)
    stripe.customers["cus_1"] = {"id": "cus_1", "metadata": {"clinic_id": str(CLINIC)}}
    session = fake.checkout_session(
        customer=None, subscription=None, client_reference_id="not a clinic id"
    )
    session |= {"customer": {"id": "cus_1", "object": "customer"}, "subscription": sub}
    outcome = await apply(stripe, "checkout.session.completed", session)
    assert outcome == Outcome(EventStatus.processed, CLINIC, None)
    assert stripe.reads == ["cus_1", "sub_1"]
