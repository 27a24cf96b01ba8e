"""Counting the SQL statements the service sends: an N+1 query shows as a count that grows with
the rows a request returns, deterministically, where a response time only grows noisily."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
