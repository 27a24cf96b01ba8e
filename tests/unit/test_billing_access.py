"""Who may write, for every subscription status: the rule read-only mode enforces."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.billing.access import can_write, grace_ends_at, standing_changes_at, writable
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


def test_a_clinic_without_a_billing_account_has_no_standing_change_ahead() -> None:
    assert standing_changes_at(None, Settings(_env_file=None), NOW) is None


SETTINGS = Settings(_env_file=None)
offsets = st.none() | st.integers(-10, 10).map(lambda days: NOW + dt.timedelta(days=days))


@settings(max_examples=400)  # a pure function: many examples cost a fraction of a second
@given(
    status=st.sampled_from(S),
    subscribed=st.booleans(),
    trial_ends_at=offsets,
    past_due_since=offsets,
    later=st.integers(0, 24 * 20).map(lambda hours: NOW + dt.timedelta(hours=hours)),
)
def test_whether_a_clinic_may_write_holds_until_its_standing_changes(
    status: S,
    subscribed: bool,
    trial_ends_at: dt.datetime | None,
    past_due_since: dt.datetime | None,
    later: dt.datetime,
) -> None:
    """What the credential cache relies on (ADR 0019): with nothing written, ``writable``
    answers the same at any moment before ``standing_changes_at``, and it is the moment it may
    change, never one already past."""
    account: Any = SimpleNamespace(
        status=status,
        stripe_subscription_id="sub_1" if subscribed else None,
        trial_ends_at=trial_ends_at,
        past_due_since=past_due_since,
    )
    changes_at = standing_changes_at(account, SETTINGS, NOW)
    assert changes_at is None or changes_at > NOW
    if changes_at is None or later < changes_at:
        assert writable(account, SETTINGS, later) == writable(account, SETTINGS, NOW)
