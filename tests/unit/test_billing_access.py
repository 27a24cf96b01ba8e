"""Who may write, for every subscription status: the rule read-only mode enforces."""

from __future__ import annotations

import datetime as dt

import pytest

from app.billing.access import can_write, grace_ends_at, writable
from app.billing.models import SubscriptionStatus as S
from app.settings import Settings

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
GRACE = dt.timedelta(days=7)
LATER, EARLIER = NOW + dt.timedelta(days=1), NOW - dt.timedelta(days=1)


@pytest.mark.parametrize(
    ("status", "subscribed", "trial_ends_at", "past_due_since", "expected"),
    [
        (S.trialing, False, LATER, None, True),  # the signup trial, running
        (S.trialing, False, EARLIER, None, False),  # ...ended without a subscription
        (S.trialing, False, None, None, False),
        (S.trialing, True, EARLIER, None, True),  # Stripe's trial: Stripe says when it ends
        (S.active, True, None, None, True),
        (S.past_due, True, None, NOW - dt.timedelta(days=6), True),  # within the grace
        (S.past_due, True, None, NOW - dt.timedelta(days=7), False),  # the grace is over
        (S.past_due, True, None, None, True),  # not yet seen past due: the grace starts now
        (S.incomplete, True, LATER, None, True),  # first payment pending, trial still on
        (S.incomplete, True, EARLIER, None, False),
        (S.unpaid, True, LATER, None, False),
        (S.canceled, True, LATER, None, False),
        (S.paused, True, LATER, None, False),
        (S.incomplete_expired, True, LATER, None, False),
    ],
)
def test_who_may_write(status, subscribed, trial_ends_at, past_due_since, expected) -> None:
    allowed = can_write(
        status,
        subscribed=subscribed,
        trial_ends_at=trial_ends_at,
        past_due_since=past_due_since,
        grace=GRACE,
        now=NOW,
    )
    assert allowed is expected


@pytest.mark.parametrize("status", [S.active, S.trialing, S.unpaid, S.canceled])
def test_only_a_clinic_past_due_has_a_grace_that_ends(status: S) -> None:
    # Stripe leaves past_due_since behind once a payment is made: it ends no grace then.
    assert grace_ends_at(S.past_due, EARLIER, GRACE) == EARLIER + GRACE
    assert grace_ends_at(S.past_due, None, GRACE) is None
    assert grace_ends_at(status, EARLIER, GRACE) is None


def test_a_clinic_without_a_billing_account_may_not_write() -> None:
    assert writable(None, Settings(_env_file=None), NOW) is False
