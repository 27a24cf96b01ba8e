"""Running tests/load/locustfile.py against the fleet, and reading what it left.

Locust runs in its own process: imported into pytest it monkey-patches the interpreter with
gevent after ssl, threading and asyncio are in use (the live server's fault proxy thread,
pytest-asyncio's loop), which gevent warns about and which then fails with "cannot release
un-acquired lock".
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.load.conftest import Fleet, Profile

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class Run:
    process: subprocess.CompletedProcess[str]
    results: dict[str, Any]
    """What the locustfile wrote when it ended (see its docstring)."""
    endpoints: list[dict[str, Any]]
    """Locust's own statistics per endpoint (its CSV), with the HTTP statuses of each."""

    @property
    def output(self) -> str:
        return (
            f"locust exited {self.process.returncode}:\n"
            f"{self.process.stdout[-3000:]}\n{self.process.stderr[-3000:]}"
        )


def run_locust(
    fleet: Fleet, profile: Profile, seconds: int, reports: Path, prefix: str = "stats"
) -> Run:
    """The profile's users for ``seconds``; Locust's HTML report at ``<prefix>.html``, its CSV at
    ``<prefix>_*.csv`` and the locustfile's results at ``<prefix>_results.json``."""
    results = reports / f"{prefix}_results.json"
    for stale in (results, reports / f"{prefix}.html", reports / f"{prefix}_stats.csv"):
        stale.unlink(missing_ok=True)
    env = {
        **os.environ,
        "VETIFY_LOAD_FLEET": str(fleet.manifest),
        "VETIFY_LOAD_PACE": str(profile.pace),
        "VETIFY_LOAD_LOGIN_PACE": str(profile.login_pace),
        "VETIFY_LOAD_WEBHOOK_PACE": str(profile.webhook_pace),
        "VETIFY_LOAD_WEBHOOK_SECRET": fleet.webhook_secret,
        "VETIFY_LOAD_RESULTS": str(results),
        "VETIFY_LOAD_WARMUP": str(profile.warmup),
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
        fleet.server.url,
        "--users",
        str(profile.users),
        "--spawn-rate",
        str(profile.spawn_rate),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "10",
        "--html",
        str(reports / f"{prefix}.html"),
        "--csv",
        str(reports / prefix),
        "--exit-code-on-error",
        "1",
        "--loglevel",
        "WARNING",
    ]
    process = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        command, env=env, capture_output=True, text=True, timeout=seconds + 180, check=False
    )
    assert results.is_file(), f"the locustfile wrote no results:\n{process.stderr[-4000:]}"
    found: dict[str, Any] = json.loads(results.read_text(encoding="utf-8"))
    with (reports / f"{prefix}_stats.csv").open(newline="", encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["Name"] != "Aggregated"]
    endpoints = [
        {
            "name": f"{row['Type']} {row['Name']}",
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _ms(row["50%"]),
            "p95_ms": _ms(row["95%"]),
            "p99_ms": _ms(row["99%"]),
            "statuses": found["statuses"].get(f"{row['Type']} {row['Name']}", {}),
        }
        for row in rows
    ]
    return Run(process, found, endpoints)


def _ms(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value)


def server_errors(run: Run) -> dict[str, dict[str, int]]:
    """Per endpoint, the 5xx answers and the requests that got no answer (status 0)."""
    found = {
        endpoint["name"]: {
            status: count
            for status, count in endpoint["statuses"].items()
            if status.startswith("5") or status == "0"
        }
        for endpoint in run.endpoints
    }
    return {name: counts for name, counts in found.items() if counts}
