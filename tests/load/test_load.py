"""A fleet of clinics under load (tests/load/locustfile.py) against `vetify serve`, judged by
service-level objectives per endpoint class.

Pass criteria, at every length (the budgets in conftest.PROFILES):

* no 5xx answer, no request without an answer, no failed request (error ratio 0; a 409
  booking-conflict problem is the expected answer to a double booking and counts as a success);
* tenancy: every id in every JSON answer belongs to the caller's clinic (tests/load/tenancy.py),
  and the check saw every clinic's answers;
* p95 and p99 of each endpoint class (read, search, write, upload, login, webhook; page once
  the web pages exist) within budget;
* throughput once every user runs at or above the floor.

Reports (reports/load/): Locust's report.html and stats_*.csv, stats.json (the quality report's
input: per endpoint and per class), trend.csv (a row per class and run, appended: the nightly
workflow keeps it in its cache) and trend.json (the same per run, charted in the report).

Measured here: see the budgets' comment in conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from tests.load.conftest import Fleet, Profile, wait_until_ready
from tests.load.runner import Run, run_locust, server_errors
from tests.load.slo import append_trend, over_budget, write_trend_json
from tests.tools.report import git_commit

REQUIRED = ("read", "search", "write", "upload", "login", "webhook")


def summarise(profile: Profile, fleet: Fleet, run: Run, wall_seconds: float) -> dict[str, Any]:
    classes: dict[str, dict[str, Any]] = run.results["classes"]
    return {
        "length": os.environ.get("VETIFY_SUITE_LENGTH", "full"),
        "clinics": profile.clinics,
        "users": profile.users,
        "seconds": profile.seconds,
        "seeded_seconds": round(fleet.seeded_in, 1),
        "wall_seconds": round(wall_seconds, 1),
        "requests": sum(c["requests"] for c in classes.values()),
        "failures": sum(c["failures"] for c in classes.values()),
        "rps": run.results["steady_rps"],
        "rps_floor": profile.rps_floor,
        "p95_budget_ms": None,  # one per class: see "budgets"
        "budgets": {name: vars(budget) for name, budget in profile.budgets.items()},
        "expected_conflicts": sum(e["statuses"].get("409", 0) for e in run.endpoints),
        "classes": classes,
        "tenancy": run.results["tenancy"],
        "endpoints": run.endpoints,
    }


def record_trend(reports: Path, summary: dict[str, Any]) -> None:
    commit = os.environ.get("GITHUB_SHA") or git_commit()
    rows = append_trend(reports / "trend.csv", summary, commit, dt.datetime.now(dt.UTC))
    write_trend_json(reports / "trend.json", rows)


def test_a_fleet_of_clinics_under_load(fleet: Fleet, profile: Profile, load_reports: Path) -> None:
    wait_until_ready(fleet.server.url)
    started = time.monotonic()
    run = run_locust(fleet, profile, profile.seconds, load_reports)
    summary = summarise(profile, fleet, run, time.monotonic() - started)
    (load_reports / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    (load_reports / "stats.html").replace(load_reports / "report.html")
    record_trend(load_reports, summary)

    assert not server_errors(run), f"5xx or unanswered requests: {server_errors(run)}"
    tenancy = summary["tenancy"]
    assert tenancy["foreign_count"] == 0, f"answers with another clinic's ids: {tenancy}"
    assert summary["failures"] == 0, f"failed requests (see reports/load/):\n{run.output}"
    assert tenancy["clinics"] >= profile.clinics, tenancy
    json_answers = sum(
        count
        for endpoint in run.endpoints
        for status, count in endpoint["statuses"].items()
        if status != "204" and "/webhooks/" not in endpoint["name"]  # no ids, no caller
    )
    assert tenancy["checked_responses"] >= json_answers, (
        f"the tenancy check missed answers: {tenancy['checked_responses']} of {json_answers}"
    )
    missing = [name for name in REQUIRED if not summary["classes"].get(name, {}).get("requests")]
    assert not missing, f"no requests of {missing}:\n{run.output}"
    slow = over_budget(summary["classes"], profile.budgets)
    assert not slow, f"over budget: {slow} (budgets {summary['budgets']})"
    assert summary["rps"] >= profile.rps_floor, (
        f"{summary['rps']} requests/s with every user running; the floor is {profile.rps_floor}"
    )
    assert run.process.returncode == 0, run.output
