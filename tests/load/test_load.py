"""A clinic's day under load: front desk and vets (tests/load/locustfile.py) against `vetify serve`.

Locust runs in its own process: imported here it monkey-patches the interpreter with gevent
after ssl, threading and asyncio are in use (the live server's fault proxy thread, pytest-asyncio's
loop), which gevent warns about and which then fails with "cannot release un-acquired lock".

Pass criteria: no 5xx answer, no failed request (a 409 booking-conflict problem is the expected
answer to a double booking and counts as a success), no exception in a simulated user, and the
95th percentile of every endpoint within the budget of the run's length.

Measured on the 2-core development box (local PostgreSQL and Redis, one uvicorn worker):

* smoke, 10 users for 15 s: ~13 req/s, ~180 requests, p95 7-200 ms per endpoint (budget
  1500 ms); the stage takes ~25-33 s with the live server's start.
* full, 50 users for 300 s: ~46 req/s, ~13,900 requests, p95 47-100 ms per endpoint, p99
  <= 230 ms (budget 800 ms); about 40 bookings end in the expected 409.

Reports: reports/load/report.html (Locust's), reports/load/stats.json (the numbers below),
reports/load/stats_*.csv (Locust's CSV) and reports/load/statuses.json (HTTP statuses).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.harness.live import LiveServer
from tests.load.conftest import Profile, suite_length, wait_until_ready

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def run_locust(
    url: str, token: str, profile: Profile, reports: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VETIFY_LOAD_TOKEN": token,
        "VETIFY_LOAD_STATUS_FILE": str(reports / "statuses.json"),
    }
    command = [
        sys.executable,
        "-m",
        "locust",
        "--headless",
        "--only-summary",
        "--locustfile",
        str(LOCUSTFILE),
        "--host",
        url,
        "--users",
        str(profile.users),
        "--spawn-rate",
        str(profile.spawn_rate),
        "--run-time",
        f"{profile.seconds}s",
        "--stop-timeout",
        "10",
        "--html",
        str(reports / "report.html"),
        "--csv",
        str(reports / "stats"),
        "--exit-code-on-error",
        "1",
        "--loglevel",
        "WARNING",
    ]
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=profile.seconds + 120,
        check=False,
    )


def _ms(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def summarise(profile: Profile, reports: Path, wall_seconds: float) -> dict[str, Any]:
    """Locust's CSV and the status counts as reports/load/stats.json."""
    with (reports / "stats_stats.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    statuses: dict[str, dict[str, int]] = json.loads((reports / "statuses.json").read_text())
    total = next(r for r in rows if r["Name"] == "Aggregated")
    endpoints = [
        {
            "name": f"{row['Type']} {row['Name']}",
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _ms(row["50%"]),
            "p95_ms": _ms(row["95%"]),
            "p99_ms": _ms(row["99%"]),
            "statuses": statuses.get(f"{row['Type']} {row['Name']}", {}),
        }
        for row in rows
        if row["Name"] != "Aggregated"
    ]
    return {
        "length": suite_length(),
        "users": profile.users,
        "seconds": profile.seconds,
        "wall_seconds": round(wall_seconds, 1),
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": round(float(total["Requests/s"]), 2),
        "p95_budget_ms": profile.p95_budget_ms,
        "expected_conflicts": sum(e["statuses"].get("409", 0) for e in endpoints),
        "endpoints": endpoints,
    }


def test_a_clinic_day_under_load(
    live_server: LiveServer, api_token: str, profile: Profile, load_reports: Path
) -> None:
    for stale in ("report.html", "statuses.json", "stats_stats.csv", "stats.json"):
        (load_reports / stale).unlink(missing_ok=True)
    wait_until_ready(live_server.url)

    started = time.monotonic()
    locust = run_locust(live_server.url, api_token, profile, load_reports)
    summary = summarise(profile, load_reports, time.monotonic() - started)
    (load_reports / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")

    output = f"locust exited {locust.returncode}:\n{locust.stdout[-3000:]}\n{locust.stderr[-3000:]}"
    assert (load_reports / "report.html").stat().st_size > 0, output
    server_errors = {
        e["name"]: {s: n for s, n in e["statuses"].items() if s.startswith("5") or s == "0"}
        for e in summary["endpoints"]
    }
    assert not {k: v for k, v in server_errors.items() if v}, (
        f"5xx or unanswered requests: {server_errors}"
    )
    assert summary["failures"] == 0, f"failed requests (see reports/load/):\n{output}"
    assert summary["requests"] >= profile.users * 5, f"too few requests to judge:\n{output}"
    slow = {
        e["name"]: e["p95_ms"]
        for e in summary["endpoints"]
        if e["p95_ms"] is not None and e["p95_ms"] > profile.p95_budget_ms
    }
    assert not slow, f"p95 over {profile.p95_budget_ms} ms: {slow}"
    assert locust.returncode == 0, output
