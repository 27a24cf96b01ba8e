"""Billing's jobs where they decide alone (`app.billing.jobs`): a failed event's record (its
count of attempts, retrying or failed for good, the error clipped) and the trial's mail."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from app.billing import jobs
from app.billing.models import EventStatus, StripeEvent
from app.settings import Settings


class _Sessions:
    def __init__(self, event: StripeEvent) -> None:
        self.event = event

    async def __aenter__(self) -> _Sessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def begin(self) -> _Sessions:
        return self

    async def get(self, model: Any, event_id: str) -> StripeEvent | None:
        return self.event if event_id == self.event.id else None


@pytest.mark.parametrize(
    ("final", "status"), [(False, EventStatus.retrying), (True, EventStatus.failed)]
)
async def test_a_failed_try_is_counted_and_its_error_kept_clipped(
    monkeypatch: pytest.MonkeyPatch, final: bool, status: EventStatus
) -> None:
    event = StripeEvent(id="evt_1", type="invoice.paid", status=EventStatus.retrying, attempts=2)
    sessions = _Sessions(event)
    monkeypatch.setattr(jobs, "runtime", lambda context: SimpleNamespace(sessions=lambda: sessions))
    error = RuntimeError("x" * 3000)
    await jobs._record_failure(None, "evt_1", error, final=final)  # type: ignore[arg-type]
    assert (event.attempts, event.status) == (3, status)
    assert event.last_error == ("RuntimeError: " + "x" * 3000)[:2000]


def test_the_trial_mail_says_when_the_trial_ends_and_what_read_only_means() -> None:
    settings = Settings(_env_file=None, public_url="https://app.vetify.example")
    ends = dt.datetime(2026, 12, 19, 9, 30, tzinfo=dt.UTC)
    mail = jobs._trial_mail(["rita@harbour.example"], ends, settings)
    assert mail.to == ("rita@harbour.example",)
    assert mail.subject == "Your Vetify trial ends soon"
    assert mail.text == (
        "Your clinic's Vetify trial ends on 19 December 2026, 09:30 UTC.\n\n"
        "Add a payment method before then to keep writing records and booking appointments;"
        " without one the clinic becomes read-only (nothing is deleted, and everything can"
        " still be read and exported).\n\n"
        "Billing: https://app.vetify.example/billing\n"
    )
