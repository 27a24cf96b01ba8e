"""Flaky tests: the same tests run several times (other orders, other Hypothesis profiles), and
every test that passed in one run and failed in another.

    python tests/tools/flakes.py RUN_DIR [RUN_DIR ...] [--output reports/flaky.json]

Each RUN_DIR holds one run's ``junit-<stage>.xml`` files and a ``run.json`` saying how it ran
(``{"seed": ..., "profile": ...}``), as `.ci/flakes` leaves them. Writes ``flaky.json`` for the
quality report: the runs, the flaky tests with their outcome in each run, and the tests that
failed in every run (a failure, not a flake). Exits 1 when any test is flaky or failing, so
that the nightly workflow opens its failure issue; 0 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

if __package__ in (None, ""):  # run as a script: make `tests.tools` importable
    sys.path.insert(0, str(ROOT))

from tests.tools.report import STAGES, read_junit  # noqa: E402

BAD = frozenset({"failed", "error"})


def outcomes(run: Path) -> dict[str, str]:
    """``stage::test`` -> its outcome in one run (a test failing its call and its teardown
    counts once, as an error)."""
    seen: dict[str, str] = {}
    for stage in STAGES:
        for case in read_junit(stage, run / f"junit-{stage}.xml").cases:
            seen[f"{stage}::{case.name}"] = case.outcome
    return seen


def describe(run: Path) -> dict[str, Any]:
    try:
        how = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        how = {}
    return {"name": run.name, **(how if isinstance(how, dict) else {})}


def judge(runs: Sequence[Path]) -> dict[str, Any]:
    results = {run.name: outcomes(run) for run in runs}
    tests = sorted({test for seen in results.values() for test in seen})
    flaky, failing = [], []
    for test in tests:
        per_run = {name: seen[test] for name, seen in results.items() if test in seen}
        bad = {outcome in BAD for outcome in per_run.values()}
        if bad == {True, False}:
            flaky.append({"test": test, "outcomes": per_run})
        elif bad == {True}:
            failing.append({"test": test, "outcomes": per_run})
    return {
        "runs": [describe(run) for run in runs],
        "tests": len(tests),
        "flaky": flaky,
        "failing": failing,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List the tests whose outcome varied by run.")
    parser.add_argument("runs", type=Path, nargs="+", help="one folder of JUnit files per run")
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "flaky.json")
    args = parser.parse_args(argv)
    verdict = judge(args.runs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(verdict, indent=2), encoding="utf-8")
    print(
        f"flakes: {verdict['tests']} tests in {len(args.runs)} runs: "
        f"{len(verdict['flaky'])} flaky, {len(verdict['failing'])} failing in every run"
    )
    for item in verdict["flaky"] + verdict["failing"]:
        print(f"  {item['test']}: {item['outcomes']}")
    if not verdict["tests"]:
        print("flakes: no test results found", file=sys.stderr)
        return 1
    return 1 if verdict["flaky"] or verdict["failing"] else 0


if __name__ == "__main__":
    sys.exit(main())
