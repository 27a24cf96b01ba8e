"""Billing: the clinic's account, checkout and portal, and the Stripe webhook inbox.

A webhook is verified, stored (once: the event id is the key) and acknowledged; a job applies
it. Applying never trusts the event's copy of the subscription nor the order events arrive in:
it retrieves the subscription from Stripe while holding the clinic's account row, so whatever
the order, the last one applied wrote Stripe's newest state (docs/billing.md).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import stripe as stripe_sdk
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.auth.service import Principal
from app.billing import access
from app.billing.models import BillingAccount, EventStatus, StripeEvent, SubscriptionStatus
from app.billing.plans import Plan, plan_for_price, price_id
from app.billing.stripe_api import Stripe
from app.clinics.models import Clinic
from app.db.tenancy import enter_tenant
from app.kit.clock import utcnow
from app.kit.problems import BadRequest, Conflict, InvalidInput
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
# A subscription in one of these is the clinic's live one: checkout would make a second.
_SUBSCRIBED = frozenset(
    {
        SubscriptionStatus.active,
        SubscriptionStatus.trialing,
        SubscriptionStatus.past_due,
        SubscriptionStatus.unpaid,
        SubscriptionStatus.paused,
    }
)
PORTAL_WINDOW_SECONDS = 300
TRIAL_NOTICE = dt.timedelta(days=3)
"""How long before a trial ends its owners are told (Stripe's trial_will_end says the same)."""

_NONE = type(None)
_EXPANDABLE = (str, dict)  # an id, or the object when the request expanded it
STRIPE_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    # Every field of a Stripe object this module reads, with the JSON types it accepts (dotted
    # paths, ``[]`` for a list's items). tests/contract/stripe/test_field_paths.py proves each
    # is in Stripe's published example object with such a value, and that the code reads no
    # field missing here. A ``metadata`` hash is ours (``clinic_id``): its keys are not listed.
    "event": {
        "id": str,
        "type": str,
        "created": int,
        "livemode": bool,
        "data": dict,
        "data.object": dict,
    },
    "subscription": {
        "id": str,
        "customer": _EXPANDABLE,
        "metadata": dict,
        "created": int,
        "status": str,
        "trial_end": (int, _NONE),
        "cancel_at_period_end": bool,
        "items": dict,
        "items.data": list,
        "items.data[].current_period_end": int,
        "items.data[].price": dict,
        "items.data[].price.id": str,
    },
    "invoice": {
        "customer": (*_EXPANDABLE, _NONE),
        "parent": (dict, _NONE),
        "parent.subscription_details": (dict, _NONE),
        "parent.subscription_details.subscription": _EXPANDABLE,
        "parent.subscription_details.metadata": (dict, _NONE),
    },
    "checkout.session": {
        "mode": str,
        "subscription": (*_EXPANDABLE, _NONE),
        "client_reference_id": (str, _NONE),
        "customer": (*_EXPANDABLE, _NONE),
    },
    "customer": {
        "metadata": dict,
    },
}


# -- the account ------------------------------------------------------------------------------
async def open_account(
    session: AsyncSession, trial_days: int, *, remind: bool = True
) -> BillingAccount:
    """A new clinic's trial: no card, no Stripe customer until it checks out. ``remind``: mail
    the owners ``TRIAL_NOTICE`` before it ends (a job scheduled now, in this transaction)."""
    ends = utcnow() + dt.timedelta(days=trial_days)
    account = BillingAccount(status=SubscriptionStatus.trialing, trial_ends_at=ends)
    session.add(account)
    await session.flush()
    if remind:
        from app.billing.jobs import mail_trial_ending
        from app.queue import enqueue

        await enqueue(
            session,
            mail_trial_ending,
            schedule_at=max(utcnow(), ends - TRIAL_NOTICE),
            clinic_id=str(account.tenant_id),
        )
    return account


async def current_account(session: AsyncSession, *, lock: bool = False) -> BillingAccount | None:
    statement = select(BillingAccount)
    if lock:
        statement = statement.with_for_update()
    return (await session.scalars(statement)).one_or_none()


@dataclass(frozen=True)
class Overview:
    plan: Plan
    account: BillingAccount
    read_only: bool
    grace_ends_at: dt.datetime | None


async def overview(session: AsyncSession, settings: Settings, caller: Principal) -> Overview:
    account = await current_account(session)
    assert account is not None, "signup makes every clinic's billing account"
    return Overview(
        plan=caller.plan,
        account=account,
        read_only=not access.writable(account, settings, utcnow()),
        grace_ends_at=access.grace_ends_at(
            account.status, account.past_due_since, dt.timedelta(days=settings.billing_grace_days)
        ),
    )


async def checkout(
    session: AsyncSession, settings: Settings, stripe: Stripe, caller: Principal, plan: Plan
) -> str:
    """A Stripe Checkout URL for ``plan``; a trial still running carries over (no charge
    before it ends)."""
    price = price_id(settings, plan)
    if price is None:
        raise InvalidInput(f"The {plan} plan is not on sale.")
    account = await current_account(session, lock=True)
    assert account is not None, "signup makes every clinic's billing account"
    if account.stripe_subscription_id is not None and account.status in _SUBSCRIBED:
        raise Conflict("This clinic has a subscription: change it in the billing portal.")
    if account.stripe_customer_id is None:
        clinic = await session.get_one(Clinic, caller.clinic_id)
        owner_email = await _owner_email(session, caller)
        account.stripe_customer_id = await stripe.create_customer(
            caller.clinic_id, clinic.name, owner_email
        )
    trial_end = None
    # Stripe refuses a trial ending less than 48 hours ahead.
    if account.trial_ends_at is not None and account.trial_ends_at > utcnow() + dt.timedelta(
        hours=48
    ):
        trial_end = int(account.trial_ends_at.timestamp())
    return await stripe.create_checkout_session(
        clinic_id=caller.clinic_id,
        customer=account.stripe_customer_id,
        price=price,
        trial_end=trial_end,
        success_url=f"{settings.public_url}/billing?checkout=done",
        cancel_url=f"{settings.public_url}/billing?checkout=cancelled",
    )


async def portal(session: AsyncSession, settings: Settings, stripe: Stripe) -> str:
    account = await current_account(session)
    if account is None or account.stripe_customer_id is None:
        raise Conflict("This clinic has not subscribed yet: start with checkout.")
    window = int(utcnow().timestamp()) // PORTAL_WINDOW_SECONDS
    return await stripe.create_portal_session(
        customer=account.stripe_customer_id,
        return_url=f"{settings.public_url}/billing",
        window=window,
    )


async def _owner_email(session: AsyncSession, caller: Principal) -> str:
    # The one asking (owner or admin): Stripe mails receipts and reminders there.
    user = await session.get_one(User, caller.user_id)
    return user.email


# -- webhook intake ---------------------------------------------------------------------------
class SignatureRefused(BadRequest):
    slug, title = "webhook-signature", "Webhook signature not valid"


def verify(payload: bytes, signature: str | None, secrets: list[str]) -> dict[str, Any]:
    """The event, if ``signature`` is Stripe's for ``payload`` under one of ``secrets`` (all
    active while a secret rolls) and less than five minutes old."""
    if not signature:
        raise SignatureRefused("The Stripe-Signature header is missing.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:  # Stripe signs JSON, which is UTF-8
        raise BadRequest("The event is not JSON.") from exc
    for secret in secrets:
        try:
            # Only the signature: the SDK's construct_event also parses, and fails with an
            # AttributeError (a 500) on signed JSON that is not an object; _event checks that.
            stripe_sdk.WebhookSignature.verify_header(
                text, signature, secret, stripe_sdk.Webhook.DEFAULT_TOLERANCE
            )
        except stripe_sdk.SignatureVerificationError:
            continue
        return _event(payload)
    raise SignatureRefused("No signature matches an active endpoint secret, or it is too old.")


_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
_EVENT_TYPE = re.compile(r"[a-z0-9_.]{1,255}")
_LATEST = 2**37  # seconds since 1970: the year 6325, far past any event and within datetime


def _event(payload: bytes) -> dict[str, Any]:
    """The signed body as an event, if it is one we can store as it came (Stripe's shapes;
    text PostgreSQL takes: no NUL, no lone surrogates)."""
    try:
        event = json.loads(payload)
    except ValueError as exc:  # signed, but not JSON
        raise BadRequest("The event is not JSON.") from exc
    ok = (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and _EVENT_ID.fullmatch(event["id"]) is not None
        and isinstance(event.get("type"), str)
        and _EVENT_TYPE.fullmatch(event["type"]) is not None
        and type(event.get("created")) is int
        and 0 <= event["created"] <= _LATEST
        and isinstance(event.get("livemode", False), bool)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )
    if not ok:
        raise BadRequest("The body is not a Stripe event.")
    if not _storable(event):
        raise BadRequest("The event holds text that cannot be stored (NUL, or bad UTF-16).")
    return dict(event)


def _storable(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


async def receive(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Store the event and enqueue its job, in one transaction; False if it was already here."""
    from app.billing.jobs import apply_stripe_event
    from app.queue import enqueue

    stored = await session.scalar(
        insert(StripeEvent)
        .values(
            id=event["id"],
            type=event["type"],
            created=dt.datetime.fromtimestamp(event["created"], dt.UTC),
            livemode=bool(event.get("livemode", False)),
            payload=event,
            status=EventStatus.pending,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    )
    if stored is None:
        return False
    await enqueue(session, apply_stripe_event, event_id=event["id"])
    return True


# -- applying an event ------------------------------------------------------------------------
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
        subscription_id = _id(obj["subscription"])
        clinic_id = _uuid(obj.get("client_reference_id"))
    elif kind in INVOICE_EVENTS:
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        if not details.get("subscription"):
            return Outcome(EventStatus.ignored, note="not a subscription's invoice")
        subscription_id = _id(details["subscription"])
        clinic_id = _uuid((details.get("metadata") or {}).get("clinic_id"))
    else:
        subscription_id = obj["id"]
        clinic_id = _uuid((obj.get("metadata") or {}).get("clinic_id"))
    customer = _id(obj["customer"]) if obj.get("customer") else None
    if clinic_id is None and customer is not None:
        found = await stripe.customer(customer)
        clinic_id = _uuid((found.get("metadata") or {}).get("clinic_id"))
    if clinic_id is None:
        return Outcome(EventStatus.ignored, note="not a Vetify clinic's subscription")

    await enter_tenant(session, clinic_id)
    # The lock orders concurrent jobs of one clinic; the retrieve below happens after it, so the
    # job that commits last read Stripe last.
    account = await current_account(session, lock=True)
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
    from app.billing.jobs import mail_trial_ending
    from app.queue import enqueue

    await enqueue(session, mail_trial_ending, clinic_id=str(clinic_id))


def _not_this_clinic(
    account: BillingAccount, subscription: dict[str, Any], clinic_id: uuid.UUID
) -> str | None:
    customer = _id(subscription["customer"])
    if account.stripe_customer_id is not None and account.stripe_customer_id != customer:
        return "the subscription's customer is not the clinic's"
    stated = _uuid((subscription.get("metadata") or {}).get("clinic_id"))
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
    created = _time(subscription["created"])
    if (
        account.stripe_subscription_id not in (None, subscription["id"])
        and account.subscription_created_at is not None
        and created < account.subscription_created_at
    ):
        return False
    now = utcnow()
    status = SubscriptionStatus(subscription["status"])
    account.stripe_customer_id = _id(subscription["customer"])
    account.stripe_subscription_id = subscription["id"]
    account.subscription_created_at = created
    account.past_due_since = (
        (account.past_due_since or now) if status is SubscriptionStatus.past_due else None
    )
    account.status = status
    if subscription.get("trial_end"):
        account.trial_ends_at = _time(subscription["trial_end"])
    items = subscription["items"]["data"]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    account.current_period_end = _time(max(ends)) if ends else None
    account.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    account.synced_at = now
    plan = plan_for_price(settings, items[0]["price"]["id"]) if items else None
    if plan is None:
        log.warning("clinic %s pays a price no plan has; plan unchanged", clinic_id)
    else:
        await session.execute(update(Clinic).where(Clinic.id == clinic_id).values(plan=plan))
    await session.flush()
    return True


def _id(value: Any) -> str:
    """An expandable field: Stripe sends the id, or the object when asked to expand it."""
    return str(value["id"] if isinstance(value, dict) else value)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def _time(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
