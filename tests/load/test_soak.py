"""The soak (nightly, 30 minutes): the fleet at a steady pace while the server's memory, file
descriptors, connections and pool checkouts are sampled every 10 s; a least-squares slope over
the limit after the warm-up fails it (a leak), as does any failed request or foreign id.

Not collected at smoke length (conftest.py). ``VETIFY_SOAK_SECONDS`` and ``VETIFY_SOAK_WARMUP``
shorten it for calibration. Report: reports/load/soak.json (every sample, the slopes, the
verdict) beside Locust's soak.html.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.load.conftest import SOAK, Fleet, wait_until_ready
from tests.load.runner import run_locust, server_errors
from tests.load.soak import Sampler, judge


def test_the_server_holds_steady_for_a_soak(fleet: Fleet, load_reports: Path) -> None:
    server = fleet.server
    assert server.serve is not None
    wait_until_ready(server.url)
    with Sampler(server.serve.pid, server.database.superuser_url, server.database.name) as sampler:
        run = run_locust(fleet, SOAK.load, SOAK.seconds, load_reports, prefix="soak")
    verdict = judge(sampler.samples, SOAK.warmup, SOAK.limits)
    report = {
        "seconds": SOAK.seconds,
        "warmup": SOAK.warmup,
        "verdict": verdict,
        "classes": run.results["classes"],
        "rps": run.results["steady_rps"],
        "tenancy": run.results["tenancy"],
        "samples": sampler.as_json(),
    }
    (load_reports / "soak.json").write_text(json.dumps(report, indent=1) + "\n")

    assert not server_errors(run), f"5xx or unanswered requests: {server_errors(run)}"
    assert run.results["tenancy"]["foreign_count"] == 0, run.results["tenancy"]
    failures = sum(c["failures"] for c in run.results["classes"].values())
    assert failures == 0, f"failed requests (see reports/load/soak*):\n{run.output}"
    assert verdict["samples"] >= 3, f"too few samples after the warm-up: {verdict}"
    assert not verdict["over"], f"growing while it served: {verdict}"
