"""The app's clock, frozen for a test and moved by hand (the ``clock`` fixture)."""

from __future__ import annotations

import datetime as dt

import pytest

from app.kit import clock as app_clock


class Clock:
    """The app's clock, frozen at ``now`` until a test moves it (``app.kit.clock.utcnow`` reads
    ``datetime.now``, which this replaces for the test)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def advance(self, by: dt.timedelta) -> None:
        self.now += by


def freeze(monkeypatch: pytest.MonkeyPatch) -> Clock:
    frozen = Clock()

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return frozen.now if tz is None else frozen.now.astimezone(tz)

    monkeypatch.setattr(app_clock, "datetime", FrozenDatetime)
    return frozen
