"""Per-clinic usage in memory (app/kit/usage.py), the flusher's bounds and the report's window
and output (ADR 0026); the database side is tests/integration/test_usage.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from contextlib import asynccontextmanager
from typing import Any

import pytest

from app.kit.usage import Counts, Usage, clinic_named
from app.observability.usage import Flusher
from app.observability.usage_report import ClinicRow, Report, window

CLINIC, OTHER = uuid.uuid4(), uuid.uuid4()


def test_counts_are_kept_per_clinic_and_day(clock) -> None:
    clock.now = dt.datetime(2026, 12, 6, 23, 59, tzinfo=dt.UTC)
    usage = Usage()
    usage.request(CLINIC)
    usage.request(CLINIC)
    usage.job(OTHER)
    clock.advance(dt.timedelta(minutes=2))
    usage.request(CLINIC)
    assert usage.take() == {
        (CLINIC, dt.date(2026, 12, 6)): Counts(requests=2),
        (OTHER, dt.date(2026, 12, 6)): Counts(jobs=1),
        (CLINIC, dt.date(2026, 12, 7)): Counts(requests=1),
    }
    assert usage.take() == {}
    assert len(usage) == 0


def test_counts_given_back_add_to_those_counted_since(clock) -> None:
    usage = Usage()
    usage.request(CLINIC)
    taken = usage.take()
    usage.request(CLINIC)
    usage.job(CLINIC)
    usage.give_back(taken)
    assert usage.take() == {(CLINIC, clock.now.date()): Counts(requests=2, jobs=1)}


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"clinic_id": str(CLINIC), "attachment_id": "x"}, CLINIC),
        ({"user_id": str(CLINIC)}, None),
        ({"clinic_id": "not-a-uuid"}, None),
        ({"clinic_id": 7}, None),
    ],
    ids=["named", "another id", "not a uuid", "not a string"],
)
def test_the_clinic_a_job_names(arguments: dict[str, Any], named: uuid.UUID | None) -> None:
    assert clinic_named(arguments) == named


class _Hanging:
    """An engine whose database never answers."""

    @asynccontextmanager
    async def begin(self) -> Any:
        await asyncio.Event().wait()
        yield


class _Counting:
    """An engine that answers every statement, counting them."""

    def __init__(self) -> None:
        self.statements = 0

    @asynccontextmanager
    async def begin(self) -> Any:
        yield self

    async def execute(self, _statement: Any) -> None:
        self.statements += 1


async def test_the_flusher_flushes_every_interval_while_it_runs() -> None:
    engine, usage = _Counting(), Usage()
    flusher = Flusher(engine, usage, every=0.01, stop_within=1).start()  # type: ignore[arg-type]
    usage.request(CLINIC)
    for _ in range(200):
        if engine.statements:
            break
        await asyncio.sleep(0.01)
    assert engine.statements == 1
    assert len(usage) == 0
    await flusher.stop()
    assert engine.statements == 1  # nothing more to write


async def test_a_flush_that_hangs_at_shutdown_is_given_up_within_its_bound(caplog) -> None:
    usage = Usage()
    usage.request(CLINIC)
    flusher = Flusher(_Hanging(), usage, every=3600, stop_within=0.05).start()  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "vetify.usage"):
        await asyncio.wait_for(flusher.stop(), 2)
    assert "usage not flushed at shutdown: 1 clinic-day(s) lost" in caplog.text


def test_the_window_ends_on_the_day_asked_or_today(clock) -> None:
    clock.now = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
    assert window(None, 1) == (dt.date(2026, 12, 6), dt.date(2026, 12, 6))
    assert window(dt.date(2026, 3, 1), 7) == (dt.date(2026, 2, 23), dt.date(2026, 3, 1))


def test_a_deleted_clinic_is_shown_as_such() -> None:
    found = Report(
        dt.date(2026, 12, 1),
        dt.date(2026, 12, 6),
        [ClinicRow(CLINIC, None, requests=4, jobs=0, storage_bytes=0)],
    )
    assert found.table().splitlines()[0].startswith("usage 2026-12-01 to 2026-12-06 (UTC")
    assert found.table().splitlines()[2].split()[1] == "(deleted)"
    assert found.as_json()["clinics"] == [
        {"clinic_id": str(CLINIC), "name": None, "requests": 4, "jobs": 0, "storage_bytes": 0}
    ]
    assert Report(dt.date(2026, 12, 6), dt.date(2026, 12, 6), []).table().endswith("no clinics")
