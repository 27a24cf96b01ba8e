"""Whether a clinic may write: its trial, its subscription's status and the grace period.

A clinic that may not write is read-only: it reads and exports everything, and every write
answers 402 with the way to billing (docs/billing.md).
"""

from __future__ import annotations

import datetime as dt

from app.billing.models import BillingAccount, SubscriptionStatus
from app.settings import Settings

_ALWAYS = frozenset({SubscriptionStatus.active})
_NEVER = frozenset(
    {
        SubscriptionStatus.unpaid,
        SubscriptionStatus.canceled,
        SubscriptionStatus.paused,
        SubscriptionStatus.incomplete_expired,
    }
)


def can_write(
    status: SubscriptionStatus,
    *,
    subscribed: bool,
    trial_ends_at: dt.datetime | None,
    past_due_since: dt.datetime | None,
    grace: dt.timedelta,
    now: dt.datetime,
) -> bool:
    if status in _NEVER:
        return False
    if status in _ALWAYS:
        return True
    if status is SubscriptionStatus.past_due:
        return past_due_since is None or now < past_due_since + grace
    if status is SubscriptionStatus.trialing and subscribed:
        return True  # Stripe runs this trial, and says when it ends
    # Our own trial (no card yet), or a first payment still in progress during it.
    return trial_ends_at is not None and now < trial_ends_at


def writable(account: BillingAccount | None, settings: Settings, now: dt.datetime) -> bool:
    if account is None:
        return False  # signup makes every clinic's account: none is not a free pass
    return can_write(
        account.status,
        subscribed=account.stripe_subscription_id is not None,
        trial_ends_at=account.trial_ends_at,
        past_due_since=account.past_due_since,
        grace=dt.timedelta(days=settings.billing_grace_days),
        now=now,
    )


_ENDED = frozenset({SubscriptionStatus.canceled, SubscriptionStatus.incomplete_expired})


def ended_at(
    status: SubscriptionStatus,
    *,
    subscribed: bool,
    trial_ends_at: dt.datetime | None,
    current_period_end: dt.datetime | None,
    synced_at: dt.datetime | None,
) -> dt.datetime | None:
    """When the clinic stopped being a customer: its subscription canceled or expired (at the
    end of the last period paid for, else when we learnt it), or its own trial over with no
    subscription ever begun. None while it is one, or may still pay (past due, unpaid, paused,
    a first payment in progress): those are read-only, never gone."""
    if status in _ENDED:
        return current_period_end or synced_at
    if status is SubscriptionStatus.trialing and not subscribed:
        return trial_ends_at
    return None


def grace_ends_at(
    status: SubscriptionStatus, past_due_since: dt.datetime | None, grace: dt.timedelta
) -> dt.datetime | None:
    if status is SubscriptionStatus.past_due and past_due_since is not None:
        return past_due_since + grace
    return None


def standing_changes_at(
    account: BillingAccount | None, settings: Settings, now: dt.datetime
) -> dt.datetime | None:
    """The next moment :func:`writable` may answer otherwise with nothing written: the end of
    a trial or of a grace period still ahead, whichever comes first."""
    if account is None:
        return None
    grace_end = grace_ends_at(
        account.status, account.past_due_since, dt.timedelta(days=settings.billing_grace_days)
    )
    ahead = [end for end in (account.trial_ends_at, grace_end) if end is not None and end > now]
    return min(ahead, default=None)
