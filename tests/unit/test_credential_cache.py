"""The credential cache's bounds and its rule for an entry still being right (ADR 0019)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from app.auth.cache import CredentialCache, Known
from app.auth.models import CredentialKind, Role
from app.auth.principal import Standing
from app.auth.service import Resolved
from app.db.tenancy import Epochs

NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)


def known(
    *, clinic_epoch: int | None = 3, user_epoch: int = 7, changes_at: dt.datetime | None = None
) -> Known:
    resolved = Resolved(
        credential_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        clinic_id=uuid.uuid4(),
        kind=CredentialKind.api_token,
        role=Role.vet,
        revoked=False,
        expires_at=NOW + dt.timedelta(days=1),
        created_at=NOW,
        last_used_at=NOW,
        require_mfa=False,
        mfa_enabled=False,
        user_epoch=user_epoch,
    )
    standing = Standing(600, read_only=False, changes_at=changes_at)
    return Known(resolved, standing, clinic_epoch, checked_at=NOW)


@pytest.mark.parametrize(
    ("epochs", "current"),
    [
        (Epochs(clinic=3, user=7), True),
        (Epochs(clinic=4, user=7), False),
        (Epochs(clinic=3, user=8), False),
        (Epochs(clinic=None, user=7), False),  # the clinic is gone (or not visible)
        (Epochs(clinic=3, user=None), False),  # the user is gone
    ],
)
def test_an_entry_is_current_only_under_the_epochs_it_was_resolved_under(
    epochs: Epochs, current: bool
) -> None:
    assert known().current(epochs, NOW) is current


def test_an_entry_resolved_where_the_clinic_was_not_visible_is_never_current() -> None:
    assert not known(clinic_epoch=None).current(Epochs(clinic=None, user=7), NOW)


def test_an_entry_stops_being_current_when_its_standing_may_change() -> None:
    ends = NOW + dt.timedelta(hours=1)
    entry = known(changes_at=ends)
    epochs = Epochs(clinic=3, user=7)
    assert entry.current(epochs, ends - dt.timedelta(microseconds=1))
    assert not entry.current(epochs, ends)


def test_an_entry_is_not_current_before_it_was_read() -> None:
    """The clock set back (an NTP step): a trial that had ended may be running again."""
    epochs = Epochs(clinic=3, user=7)
    assert known().current(epochs, NOW)
    assert not known().current(epochs, NOW - dt.timedelta(microseconds=1))


def test_the_cache_keeps_the_most_recently_used_within_its_size() -> None:
    cache = CredentialCache(2)
    first, second, third = known(), known(), known()
    cache.put(b"a", first)
    cache.put(b"b", second)
    assert cache.get(b"a") is first  # now the most recent
    cache.put(b"c", third)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (first, None, third)
    assert len(cache) == 2
    cache.drop(b"a")
    cache.drop(b"missing")
    assert (cache.get(b"a"), len(cache)) == (None, 1)


def test_a_cache_of_size_zero_keeps_nothing_and_of_size_one_the_last() -> None:
    cache = CredentialCache(0)
    cache.put(b"a", known())
    assert (cache.get(b"a"), len(cache)) == (None, 0)
    one, first, second = CredentialCache(1), known(), known()
    one.put(b"a", first)
    assert one.get(b"a") is first
    one.put(b"b", second)
    assert (one.get(b"a"), one.get(b"b"), len(one)) == (None, second, 1)


def test_hits_and_misses_are_counted() -> None:
    cache = CredentialCache(1)
    for hit in (True, False, True, False, False):
        cache.count(hit=hit)
    assert (cache.hits, cache.misses) == (2, 3)
