"""Sizes that generated suites report at the end of the run, so their growth is visible.

A suite calls :func:`size` when it builds its parametrisation (e.g. a route matrix) and
:func:`count` as it runs (e.g. state-machine steps); the plugin prints both in the summary.
"""

from __future__ import annotations

from collections import Counter

SIZES: dict[str, str] = {}
COUNTS: Counter[str] = Counter()


def size(name: str, description: str) -> None:
    SIZES[name] = description


def count(name: str, amount: int = 1) -> None:
    COUNTS[name] += amount


def lines() -> list[str]:
    return [f"{name}: {text}" for name, text in sorted(SIZES.items())] + [
        f"{name}: {total}" for name, total in sorted(COUNTS.items())
    ]
