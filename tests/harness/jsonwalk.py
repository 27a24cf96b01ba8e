"""Walking a JSON value (what ``json.loads`` returns): every value in it, nested ones included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def walk(value: Any) -> Iterator[Any]:
    """``value`` and every value inside it, depth first in document order (object keys are
    not values: only what they map to is visited)."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def strings(value: Any) -> Iterator[str]:
    """Every string in ``value``."""
    return (item for item in walk(value) if isinstance(item, str))
