"""`vetify billing events`: the table an operator reads when Stripe's events need a look."""

from __future__ import annotations

import argparse
import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from app.billing import jobs, operations
from app.billing.models import EventStatus, StripeEvent
from app.billing.operations import format_events
from app.settings import Settings


def test_the_event_table_has_its_header_and_each_events_error_and_note_under_it() -> None:
    event = StripeEvent(
        id="evt_1",
        type="invoice.paid",
        status=EventStatus.failed,
        attempts=3,
        received_at=dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC),
        last_error="the clinic is gone",
        note="retried by hand",
    )
    table = format_events([event]).splitlines()
    assert table[0].split() == [
        "event",
        "type",
        "status",
        "attempts",
        "received",
        "/",
        "last",
        "error",
    ]
    assert table[1].split() == ["evt_1", "invoice.paid", "failed", "3", "2026-12-01", "12:00:00"]
    # The columns line up under the header.
    assert [table[1].index(cell) for cell in ("invoice.paid", "failed")] == [
        table[0].index(heading) for heading in ("type", "status")
    ]
    assert table[2:] == ["    error: the clinic is gone", "    note: retried by hand"]
    assert format_events([]) == "no events"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vetify billing")
    operations.add_commands(parser)
    return parser.parse_args(argv)


def test_the_commands_an_operator_types() -> None:
    listed = _parse("events")
    assert (listed.billing_command, listed.status, listed.limit) == ("events", None, 50)
    failed = _parse("events", "--status", "failed", "--limit", "5")
    assert (failed.status, failed.limit) == ("failed", 5)
    assert _parse("replay", "evt_1").event_id == "evt_1"
    assert _parse("metrics").billing_command == "metrics"


@pytest.mark.parametrize(
    "argv", [(), ("events", "--status", "lost"), ("events", "--limit", "many")], ids=str
)
def test_a_command_missing_or_a_status_or_limit_that_is_none_is_refused(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _parse(*argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_the_metrics_command_says_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("--help")
    assert "vetify_stripe_events{status=...} in Prometheus text" in capsys.readouterr().out


def test_the_metric_is_one_gauge_line_per_status() -> None:
    counts = {status: index for index, status in enumerate(EventStatus)}
    assert operations.metrics(counts).splitlines() == [
        "# HELP vetify_stripe_events Stripe events received, by processing status"
        " (failed: needs replay).",
        "# TYPE vetify_stripe_events gauge",
        *(f'vetify_stripe_events{{status="{s.value}"}} {i}' for s, i in counts.items()),
    ]


class _Session:
    """The session (and its transaction) the operators' commands and the jobs run in."""

    def __init__(self, event: StripeEvent | None = None) -> None:
        self.event, self.statements, self.locks = event, [], []

    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def begin(self) -> _Session:
        return self

    async def scalars(self, statement: Any) -> Any:
        self.statements.append(statement)
        return SimpleNamespace(all=lambda: [self.event] if self.event else [])

    async def get(self, model: Any, key: str, *, with_for_update: bool = False) -> Any:
        self.locks.append(with_for_update)
        return self.event if self.event is not None and key == self.event.id else None


async def test_events_are_listed_newest_first_up_to_the_limit_of_one_status() -> None:
    session = _Session()
    await operations.events(session, "failed", 5)  # type: ignore[arg-type]
    sql = str(
        session.statements[0].compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
    )
    assert "WHERE stripe_events.status = 'failed'" in sql
    assert sql.endswith("ORDER BY stripe_events.received_at DESC \n LIMIT 5")


async def test_run_passes_the_operators_status_and_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str | None, int]] = []

    async def events(session: Any, status: str | None, limit: int) -> list[StripeEvent]:
        asked.append((status, limit))
        return []

    class Engine:
        async def dispose(self) -> None:
            pass

    monkeypatch.setattr(operations, "events", events)
    monkeypatch.setattr(operations, "create_engine", lambda settings: Engine())
    monkeypatch.setattr(operations, "async_sessionmaker", lambda engine: _Session)
    args = _parse("events", "--status", "retrying", "--limit", "7")
    assert await operations.run(Settings(_env_file=None), args) == "no events"
    assert asked == [("retrying", 7)]


async def test_a_replay_holds_the_event_while_it_queues_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued: list[dict[str, Any]] = []

    async def enqueue(session: Any, task: str, **kwargs: Any) -> int:
        queued.append(kwargs)
        return 41

    monkeypatch.setattr(operations, "enqueue", enqueue)
    event = StripeEvent(id="evt_1", type="invoice.paid", status=EventStatus.failed)
    session = _Session(event)
    said = await operations.replay(session, "evt_1")  # type: ignore[arg-type]
    assert said == "event evt_1 queued again (job 41); `vetify worker` applies it"
    assert (session.locks, event.status, queued) == (
        [True],
        EventStatus.pending,
        [{"event_id": "evt_1"}],
    )


@pytest.mark.parametrize(
    ("final", "status"), [(False, EventStatus.retrying), (True, EventStatus.failed)]
)
async def test_a_failed_try_is_counted_and_its_error_kept_clipped(
    monkeypatch: pytest.MonkeyPatch, final: bool, status: EventStatus
) -> None:
    """What an operator reads of a failing event: its tries, whether the queue gave up, why."""
    event = StripeEvent(id="evt_1", type="invoice.paid", status=EventStatus.retrying, attempts=2)
    session = _Session(event)
    monkeypatch.setattr(jobs, "runtime", lambda context: SimpleNamespace(sessions=lambda: session))
    await jobs._record_failure(None, "evt_1", RuntimeError("x" * 3000), final=final)  # type: ignore[arg-type]
    assert (event.attempts, event.status) == (3, status)
    assert event.last_error == ("RuntimeError: " + "x" * 3000)[:2000]
