"""`vetify billing events`: the table an operator reads when Stripe's events need a look."""

from __future__ import annotations

import datetime as dt

from app.billing.models import EventStatus, StripeEvent
from app.billing.operations import format_events


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
