"""The load stage's instruments fail when what they watch breaks: a foreign id in an answer, a
latency over budget, a server that grows while it serves. Pure functions: no server, no Locust."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path

from tests.load.conftest import SOAK
from tests.load.slo import Budget, append_trend, endpoint_class, over_budget, write_trend_json
from tests.load.soak import Sample, judge
from tests.load.tenancy import Ledger
from tests.tools.report import p95_trend

MINE, THEIRS = "clinic-a", "clinic-b"


def test_a_seeded_id_of_another_clinic_is_foreign() -> None:
    ledger = Ledger()
    theirs = uuid.uuid4()
    ledger.seed(THEIRS, {theirs})
    leaked = ledger.check(
        MINE, {"items": [{"id": str(uuid.uuid4()), "pet_id": str(theirs)}]}, "GET"
    )
    assert leaked == [theirs]
    assert ledger.report()["foreign_count"] == 1


def test_a_new_row_shown_to_two_clinics_is_caught_whichever_sees_it_first() -> None:
    made_during_the_run = str(uuid.uuid4())
    for first, second in ((MINE, THEIRS), (THEIRS, MINE)):
        ledger = Ledger()
        assert ledger.check(first, {"id": made_during_the_run}, "POST") == []
        assert ledger.check(second, [{"nested": {"id": made_during_the_run}}], "GET")


def test_ids_of_the_callers_own_clinic_and_other_values_pass() -> None:
    ledger = Ledger()
    own = uuid.uuid4()
    ledger.seed(MINE, {own})
    body = {"id": str(own), "name": str(uuid.uuid4())[:35], "n": 3, "ok": None}
    assert ledger.check(MINE, body, "GET") == []
    assert ledger.report()["checked_ids"] == 1


def test_requests_fall_into_their_endpoint_class() -> None:
    assert endpoint_class("POST", "/api/v1/auth/login") == "login"
    assert endpoint_class("POST", "/api/v1/billing/webhooks/stripe") == "webhook"
    assert endpoint_class("POST", "/api/v1/medical-records/{id}/attachments") == "upload"
    assert endpoint_class("GET", "/api/v1/medical-records/{id}/attachments") == "read"
    assert endpoint_class("GET", "/api/v1/pets?q=") == "search"
    assert endpoint_class("PATCH", "/api/v1/medical-records/{id}") == "write"
    assert endpoint_class("GET", "/app/today") == "page"


def test_a_class_over_its_p95_or_p99_budget_is_reported() -> None:
    budgets = {"read": Budget(p95_ms=100, p99_ms=250), "write": Budget(p95_ms=250, p99_ms=500)}
    classes = {"read": {"p95_ms": 90.0, "p99_ms": 260.0}, "write": {"p95_ms": 100, "p99_ms": 200}}
    assert over_budget(classes, budgets) == {"read": {"p99_ms": 260.0}}


def test_the_trend_keeps_every_run(tmp_path: Path) -> None:
    summary = {
        "length": "full",
        "classes": {
            "read": {
                "requests": 10,
                "rps": 1.0,
                "p50_ms": 5,
                "p95_ms": 9,
                "p99_ms": 12,
                "failures": 0,
            }
        },
    }
    for day in (1, 2):
        rows = append_trend(tmp_path / "t.csv", summary, "abc", dt.datetime(2026, 12, day))
    write_trend_json(tmp_path / "t.json", rows)
    runs = json.loads((tmp_path / "t.json").read_text())["runs"]
    assert [run["date"][:10] for run in runs] == ["2026-12-01", "2026-12-02"]
    assert runs[1]["classes"]["read"]["p95_ms"] == 9


def _samples(rss_per_hour: float, files_every: float | None = None) -> list[Sample]:
    """Thirty minutes every 10 s, as the soak saw them: argon2's 64 MiB spikes in RSS for a
    few samples now and then, all 20 connections checked out in a stall, clients' connections
    coming and going; plus the leak asked for."""
    noise = random.Random(3)
    return [
        Sample(
            at=t,
            rss_mib=145.6 + rss_per_hour * t / 3600 + (64 if t % 600 in (0, 10, 20) else 0),
            fds=500,
            tcp=150 + noise.randint(-30, 30),
            files=13 + (int(t // files_every) if files_every else 0),
            db_connections=20 if t % 500 == 0 else 10,
            db_in_use=20 if t % 500 == 0 else noise.randint(0, 3),
            cpu_seconds=t / 3,
        )
        for t in range(0, 1800, 10)
    ]


def test_a_steady_server_passes_the_soak_and_a_leaking_one_fails() -> None:
    assert judge(_samples(rss_per_hour=0), SOAK.warmup, SOAK.limits)["over"] == {}
    assert "rss_mib" in judge(_samples(rss_per_hour=60), SOAK.warmup, SOAK.limits)["over"]
    # A descriptor lost every ten minutes: 6 an hour.
    assert "files" in judge(_samples(0, files_every=600), SOAK.warmup, SOAK.limits)["over"]


def test_the_quality_report_draws_p95_per_night(tmp_path: Path) -> None:
    summary = {"length": "full", "classes": {}}
    for day, p95 in ((1, 80.0), (2, 120.0)):
        summary["classes"] = {
            "read": {
                "requests": 9,
                "rps": 1,
                "p50_ms": 5,
                "p95_ms": p95,
                "p99_ms": 1,
                "failures": 0,
            }
        }
        rows = append_trend(tmp_path / "trend.csv", summary, "abc", dt.datetime(2026, 12, day))
    write_trend_json(tmp_path / "trend.json", rows)
    chart = p95_trend(tmp_path / "trend.json")
    assert "<svg" in chart
    assert chart.count("<circle") == 2
    assert "120 ms" in chart  # the axis' top: the highest p95 shown
    assert p95_trend(tmp_path / "absent.json") == ""
