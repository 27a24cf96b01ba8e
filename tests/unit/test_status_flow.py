"""The appointment status flow, every (from, to) pair against the allowed set written out here."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.appointments.models import Status
from app.appointments.rules import RESCHEDULABLE, TRANSITIONS, can_transition

S = Status
ALLOWED = {
    (S.scheduled, S.confirmed),
    (S.scheduled, S.checked_in),
    (S.scheduled, S.cancelled),
    (S.scheduled, S.no_show),
    (S.confirmed, S.checked_in),
    (S.confirmed, S.cancelled),
    (S.confirmed, S.no_show),
    (S.checked_in, S.in_exam),
    (S.checked_in, S.cancelled),
    (S.in_exam, S.completed),
}
FINAL = {S.completed, S.cancelled, S.no_show}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(Status, Status)))
def test_every_pair(current: Status, target: Status) -> None:
    assert can_transition(current, target) is ((current, target) in ALLOWED)


def test_table_has_every_status() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_happy_path() -> None:
    path = [S.scheduled, S.confirmed, S.checked_in, S.in_exam, S.completed]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_states_have_no_way_out(final: Status) -> None:
    assert not any(can_transition(final, target) for target in Status)


def test_no_status_moves_to_itself_or_back_to_scheduled() -> None:
    assert not any(can_transition(s, s) for s in Status)
    assert not any(can_transition(s, S.scheduled) for s in Status)


def test_only_scheduled_and_confirmed_are_reschedulable() -> None:
    assert {S.scheduled, S.confirmed} == RESCHEDULABLE


@given(st.lists(st.sampled_from(list(Status)), max_size=30))
def test_walk_never_leaves_a_final_state(choices: list[Status]) -> None:
    current = S.scheduled
    reached_final = False
    for target in choices:
        if not can_transition(current, target):
            continue
        assert not reached_final, f"left final state {current} for {target}"
        current = target
        reached_final = current in FINAL
