"""The clinic's billing account: its trial, checkout and the customer portal."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.auth.principal import Principal, Standing
from app.auth.service import require_verified_email
from app.billing import access
from app.billing.models import BillingAccount, SubscriptionStatus
from app.billing.plans import DEFAULT_PLAN, Plan, entitlements, price_id
from app.billing.stripe_api import Stripe
from app.clinics.models import Clinic
from app.db.repository import get_or_404, of_clinic
from app.db.tenancy import InClinic, Tenant, check_tenant
from app.kit.clock import utcnow
from app.kit.problems import Conflict, InvalidInput
from app.queue import enqueue
from app.settings import Settings

MAIL_TRIAL_ENDING = "billing.mail_trial_ending"
"""The job (``app.billing.jobs``) that tells a clinic's owners its trial ends soon."""
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


async def open_account(
    session: AsyncSession, tenant: Tenant, trial_days: int, *, remind: bool = True
) -> BillingAccount:
    """A new clinic's trial: no card, no Stripe customer until it checks out. ``remind``: mail
    the owners ``TRIAL_NOTICE`` before it ends (a job scheduled now, in this transaction)."""
    clinic_id = check_tenant(session, tenant)
    ends = utcnow() + dt.timedelta(days=trial_days)
    account = BillingAccount(
        tenant_id=clinic_id, status=SubscriptionStatus.trialing, trial_ends_at=ends
    )
    session.add(account)
    await session.flush()
    if remind:
        await enqueue(
            session,
            MAIL_TRIAL_ENDING,
            schedule_at=max(utcnow(), ends - TRIAL_NOTICE),
            clinic_id=str(clinic_id),
        )
    return account


class NoAccount(RuntimeError):
    """A clinic without its billing account: opening a clinic always makes one."""


async def find_account(
    session: AsyncSession, tenant: Tenant, *, lock: bool = False
) -> BillingAccount | None:
    """The clinic's account (none: no such clinic); ``lock`` holds it to the transaction's end."""
    check_tenant(session, tenant)
    statement = of_clinic(tenant, BillingAccount)
    if lock:
        statement = statement.with_for_update()
    return (await session.scalars(statement)).one_or_none()


async def current_account(
    session: AsyncSession, tenant: Tenant, *, lock: bool = False
) -> BillingAccount:
    account = await find_account(session, tenant, lock=lock)
    if account is None:
        raise NoAccount(f"clinic {tenant.clinic_id} has no billing account")
    return account


async def standing(session: AsyncSession, settings: Settings, clinic_id: uuid.UUID) -> Standing:
    """The clinic's API quota and whether it may write: what ``app.auth.deps`` attaches to
    every authenticated request (``app.main`` wires it in, so auth knows nothing of billing)."""
    account = await find_account(session, InClinic(clinic_id))
    now = utcnow()
    return Standing(
        requests_per_minute=entitlements(
            account.plan if account is not None else DEFAULT_PLAN
        ).api_requests_per_minute,
        read_only=not access.writable(account, settings, now),
        changes_at=access.standing_changes_at(account, settings, now),
    )


@dataclass(frozen=True)
class Overview:
    plan: Plan
    account: BillingAccount
    read_only: bool
    grace_ends_at: dt.datetime | None


async def overview(session: AsyncSession, settings: Settings, caller: Principal) -> Overview:
    account = await current_account(session, caller)
    return Overview(
        plan=account.plan,
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
    await require_verified_email(session, caller)
    price = price_id(settings, plan)
    if price is None:
        raise InvalidInput(f"The {plan} plan is not on sale.")
    account = await current_account(session, caller, lock=True)
    if account.stripe_subscription_id is not None and account.status in _SUBSCRIBED:
        raise Conflict("This clinic has a subscription: change it in the billing portal.")
    if account.stripe_customer_id is None:
        clinic = await get_or_404(session, caller, Clinic, caller.clinic_id, "clinic")
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


async def portal(
    session: AsyncSession, settings: Settings, stripe: Stripe, caller: Principal
) -> str:
    account = await current_account(session, caller)
    if account.stripe_customer_id is None:
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
