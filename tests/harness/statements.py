"""Counting the SQL statements the service sends: an N+1 query shows as a count that grows with
the rows a request returns, deterministically, where a response time only grows noisily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event


@dataclass
class Counted:
    total: int = 0


_active: list[Counted] = []


@event.listens_for(Engine, "before_cursor_execute")
def _count(*_: Any) -> None:
    for counted in _active:
        counted.total += 1


@contextmanager
def counting() -> Iterator[Counted]:
    """Every statement any engine of this process executes inside the block (the app's too,
    whichever thread its event loop runs on). Nothing else may run against a database then."""
    counted = Counted()
    _active.append(counted)
    try:
        yield counted
    finally:
        _active.remove(counted)


@dataclass
class Recorded:
    """What was sent: each statement's text, and its parameters (as text, and as sent)."""

    sent: list[tuple[str, str]]
    values: list[Any] = field(default_factory=list)
    """Each statement's parameters as the driver got them: to send the statement again
    (tests/load/test_plans.py explains the statements a route sends)."""

    def in_text(self, value: str) -> list[str]:
        """Statements whose SQL text holds ``value``: it was spliced in, not bound."""
        return [statement for statement, _ in self.sent if value in statement]

    def anywhere(self, value: str) -> list[str]:
        """Statements that carry ``value`` in their text or their parameters."""
        return [f"{sql} {params}" for sql, params in self.sent if value in sql or value in params]


_recording: list[Recorded] = []


@event.listens_for(Engine, "before_cursor_execute")
def _record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
    for recorded in _recording:
        recorded.sent.append((statement, repr(parameters)))
        recorded.values.append(parameters)


@contextmanager
def recording() -> Iterator[Recorded]:
    """Every statement (with its parameters) any engine of this process sends in the block."""
    recorded = Recorded([])
    _recording.append(recorded)
    try:
        yield recorded
    finally:
        _recording.remove(recorded)
