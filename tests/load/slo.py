"""Endpoint classes, their latency budgets, and the trend kept across runs.

Imported by the Locust process (which times each request into its class) and by pytest (which
judges the run): no Locust import here, it would monkey-patch pytest's interpreter with gevent.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLASSES = ("read", "search", "write", "upload", "login", "webhook", "page")
"""Every request falls into one: ``page`` is the web pages' (none are served yet)."""


def endpoint_class(method: str, name: str) -> str:
    """The class of a request named as Locust reports it (``/api/v1/pets?q=``)."""
    if name.endswith("/auth/login"):
        return "login"
    if "/webhooks/" in name:
        return "webhook"
    if not name.startswith(("/api/", "/health/")):
        return "page"
    if method == "POST" and name.endswith("/attachments"):
        return "upload"
    if "?q=" in name:
        return "search"
    return "read" if method in ("GET", "HEAD") else "write"


@dataclass(frozen=True)
class Budget:
    p95_ms: float
    p99_ms: float


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return float(sorted_values[rank - 1])


def class_summary(times_ms: Iterable[float], failures: int, seconds: float) -> dict[str, Any]:
    values = sorted(times_ms)
    return {
        "requests": len(values),
        "failures": failures,
        "rps": round(len(values) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": percentile(values, 0.50),
        "p95_ms": percentile(values, 0.95),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1] if values else None,
    }


def over_budget(
    classes: dict[str, dict[str, Any]], budgets: dict[str, Budget]
) -> dict[str, dict[str, float]]:
    """Every class whose p95 or p99 is over its budget: {class: {"p95_ms": measured, ...}}."""
    over: dict[str, dict[str, float]] = {}
    for name, stats in classes.items():
        budget = budgets[name]
        for key, limit in (("p95_ms", budget.p95_ms), ("p99_ms", budget.p99_ms)):
            value = stats.get(key)
            if value is not None and value > limit:
                over.setdefault(name, {})[key] = value
    return over


# -- the trend ------------------------------------------------------------------------------------
TREND_FIELDS = (
    "date",
    "commit",
    "length",
    "class",
    "requests",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "errors",
)


def append_trend(
    csv_path: Path, summary: dict[str, Any], commit: str | None, now: dt.datetime
) -> list[dict[str, str]]:
    """One row per endpoint class of this run appended to ``csv_path`` (made with its header
    if new); every row so far is returned, oldest first."""
    new = not csv_path.exists()
    with csv_path.open("a", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, TREND_FIELDS)
        if new:
            writer.writeheader()
        for name, stats in summary["classes"].items():
            writer.writerow(
                {
                    "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "commit": (commit or "")[:12],
                    "length": summary["length"],
                    "class": name,
                    "requests": stats["requests"],
                    "rps": stats["rps"],
                    "p50_ms": stats["p50_ms"],
                    "p95_ms": stats["p95_ms"],
                    "p99_ms": stats["p99_ms"],
                    "errors": stats["failures"],
                }
            )
    with csv_path.open(newline="", encoding="utf-8") as source:
        return list(csv.DictReader(source))


def write_trend_json(json_path: Path, rows: list[dict[str, str]]) -> None:
    """The trend as the quality report charts it: one entry per run (date, commit, length) with
    each class's numbers."""
    runs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["date"], row["commit"], row["length"])
        run = runs.setdefault(
            key, {"date": key[0], "commit": key[1], "length": key[2], "classes": {}}
        )
        run["classes"][row["class"]] = {
            field: (float(row[field]) if row[field] not in ("", "None") else None)
            for field in ("requests", "rps", "p50_ms", "p95_ms", "p99_ms", "errors")
        }
    json_path.write_text(json.dumps({"runs": list(runs.values())}, indent=1) + "\n")
