"""Applying a stored Stripe event to the clinic's account.

Applying never trusts the event's copy of the subscription nor the order events arrive in: it
retrieves the subscription from Stripe while holding the clinic's account row, so whatever the
order, the last one applied wrote Stripe's newest state (docs/billing.md).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.account import MAIL_TRIAL_ENDING, find_account
from app.billing.models import BillingAccount, EventStatus, SubscriptionStatus
from app.billing.plans import plan_for_price
from app.billing.stripe_api import Stripe
from app.billing.stripe_fields import clinic_uuid, epoch_time, object_id
from app.db.tenancy import InClinic, enter_tenant
from app.kit.clock import utcnow
from app.queue import enqueue
from app.settings import Settings

log = logging.getLogger("vetify.billing")

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
INVOICE_EVENTS = frozenset({"invoice.paid", "invoice.payment_failed"})
HANDLED = SUBSCRIPTION_EVENTS | INVOICE_EVENTS | {"checkout.session.completed"}


@dataclass(frozen=True)
class Outcome:
    status: EventStatus
    clinic_id: uuid.UUID | None = None
    note: str | None = None


async def apply_event(
    session: AsyncSession, settings: Settings, stripe: Stripe, event: dict[str, Any]
) -> Outcome:
    kind = event["type"]
    if kind not in HANDLED:
        return Outcome(EventStatus.ignored, note="not a type billing handles")
    obj: dict[str, Any] = event["data"]["object"]
    if kind == "checkout.session.completed":
        if obj.get("mode") != "subscription" or not obj.get("subscription"):
            return Outcome(EventStatus.ignored, note="not a subscription checkout")
        subscription_id = object_id(obj["subscription"])
        clinic_id = clinic_uuid(obj.get("client_reference_id"))
    elif kind in INVOICE_EVENTS:
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        if not details.get("subscription"):
            return Outcome(EventStatus.ignored, note="not a subscription's invoice")
        subscription_id = object_id(details["subscription"])
        clinic_id = clinic_uuid((details.get("metadata") or {}).get("clinic_id"))
    else:
        subscription_id = obj["id"]
        clinic_id = clinic_uuid((obj.get("metadata") or {}).get("clinic_id"))
    customer = object_id(obj["customer"]) if obj.get("customer") else None
    if clinic_id is None and customer is not None:
        found = await stripe.customer(customer)
        clinic_id = clinic_uuid((found.get("metadata") or {}).get("clinic_id"))
    if clinic_id is None:
        return Outcome(EventStatus.ignored, note="not a Vetify clinic's subscription")

    await enter_tenant(session, clinic_id)
    # The lock orders concurrent jobs of one clinic; the retrieve below happens after it, so the
    # job that commits last read Stripe last.
    account = await find_account(session, InClinic(clinic_id), lock=True)
    if account is None:
        return Outcome(EventStatus.ignored, clinic_id, "no such clinic")
    newest = await stripe.subscription(subscription_id)
    why_not = _not_this_clinic(account, newest, clinic_id)
    if why_not:
        log.warning("stripe event %s refused: %s", event["id"], why_not)
        return Outcome(EventStatus.ignored, clinic_id, why_not)
    applied = await _sync(session, settings, account, newest, clinic_id)
    if kind == "customer.subscription.trial_will_end" and applied:
        await _announce_trial_end(session, account, clinic_id)
    note = None if applied else "an older subscription than the clinic's own"
    return Outcome(EventStatus.processed, clinic_id, note)


async def _announce_trial_end(
    session: AsyncSession, account: BillingAccount, clinic_id: uuid.UUID
) -> None:
    """Stripe's notice of a trial it runs: the owners are mailed (the job mails once per
    trial, whichever of this and the signup's scheduled notice runs first)."""
    if account.status is not SubscriptionStatus.trialing:
        return  # a late delivery after the first payment: the trial is over
    await enqueue(session, MAIL_TRIAL_ENDING, clinic_id=str(clinic_id))


def _not_this_clinic(
    account: BillingAccount, subscription: dict[str, Any], clinic_id: uuid.UUID
) -> str | None:
    customer = object_id(subscription["customer"])
    if account.stripe_customer_id is not None and account.stripe_customer_id != customer:
        return "the subscription's customer is not the clinic's"
    stated = clinic_uuid((subscription.get("metadata") or {}).get("clinic_id"))
    if stated is not None and stated != clinic_id:
        return "the subscription names another clinic"
    return None


async def _sync(
    session: AsyncSession,
    settings: Settings,
    account: BillingAccount,
    subscription: dict[str, Any],
    clinic_id: uuid.UUID,
) -> bool:
    """Copy Stripe's subscription onto the account; False if it is older than the one the
    clinic has (a clinic that subscribed again: the old one's news changes nothing)."""
    created = epoch_time(subscription["created"])
    if (
        account.stripe_subscription_id not in (None, subscription["id"])
        and account.subscription_created_at is not None
        and created < account.subscription_created_at
    ):
        return False
    now = utcnow()
    status = SubscriptionStatus(subscription["status"])
    account.stripe_customer_id = object_id(subscription["customer"])
    account.stripe_subscription_id = subscription["id"]
    account.subscription_created_at = created
    account.past_due_since = (
        (account.past_due_since or now) if status is SubscriptionStatus.past_due else None
    )
    account.status = status
    if subscription.get("trial_end"):
        account.trial_ends_at = epoch_time(subscription["trial_end"])
    items = subscription["items"]["data"]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    account.current_period_end = epoch_time(max(ends)) if ends else None
    account.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    account.synced_at = now
    plan = plan_for_price(settings, items[0]["price"]["id"]) if items else None
    if plan is None:
        log.warning("clinic %s pays a price no plan has; plan unchanged", clinic_id)
    else:
        account.plan = plan
    await session.flush()
    return True
