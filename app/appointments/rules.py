"""The appointment status flow. Pure: no I/O, so it is unit-tested exhaustively."""

from __future__ import annotations

from app.appointments.models import Status

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.scheduled: frozenset(
        {Status.confirmed, Status.checked_in, Status.cancelled, Status.no_show}
    ),
    Status.confirmed: frozenset({Status.checked_in, Status.cancelled, Status.no_show}),
    Status.checked_in: frozenset({Status.in_exam, Status.cancelled}),
    Status.in_exam: frozenset({Status.completed}),
    Status.completed: frozenset(),
    Status.cancelled: frozenset(),
    Status.no_show: frozenset(),
}
"""Allowed next statuses. Completed, cancelled and no-show are final."""

RESCHEDULABLE = frozenset({Status.scheduled, Status.confirmed})


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
