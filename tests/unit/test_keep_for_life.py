"""app/kit/lifecycle.py, ``keep_for_life``: what a serving process built before it serves is
out of the garbage collector's reach, and the garbage among it was collected first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.kit.lifecycle import keep_for_life


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This test run's heap is given back to the collector after."""
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_what_lives_is_frozen_and_the_garbage_among_it_collected() -> None:
    kept = _Node()
    garbage, partner = _Node(), _Node()
    garbage.other, partner.other = partner, garbage  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage, partner

    keep_for_life()

    assert gone() is None
    assert gc.get_freeze_count() > 0
    assert not any(candidate is kept for candidate in gc.get_objects())
    made_after = _Node()
    assert any(candidate is made_after for candidate in gc.get_objects())
