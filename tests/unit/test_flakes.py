"""tests/tools/flakes.py: which tests changed outcome between repeat runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.tools.flakes import judge, main


def _run(root: Path, name: str, seed: int, **cases: str) -> Path:
    """A run's folder: one unit-stage JUnit file with ``cases`` (name -> outcome)."""
    run = root / name
    run.mkdir(parents=True)
    body = {"passed": "", "failed": "<failure/>", "error": "<error/>", "skipped": "<skipped/>"}
    xml = "".join(
        f'<testcase classname="tests.unit.t" name="{test}" time="0.1">{body[outcome]}</testcase>'
        for test, outcome in cases.items()
    )
    (run / "junit-unit.xml").write_text(f"<testsuite>{xml}</testsuite>", encoding="utf-8")
    (run / "run.json").write_text(json.dumps({"seed": seed, "profile": "pr"}), encoding="utf-8")
    return run


def test_a_test_that_passed_and_failed_is_flaky_one_that_always_failed_is_failing(
    tmp_path: Path,
) -> None:
    runs = [
        _run(tmp_path, "run-1", 11, steady="passed", wobbly="passed", broken="failed"),
        _run(tmp_path, "run-2", 22, steady="passed", wobbly="error", broken="failed"),
        _run(tmp_path, "run-3", 33, steady="passed", wobbly="passed", broken="error"),
    ]
    verdict = judge(runs)
    assert verdict["tests"] == 3
    assert verdict["flaky"] == [
        {
            "test": "unit::tests.unit.t::wobbly",
            "outcomes": {"run-1": "passed", "run-2": "error", "run-3": "passed"},
        }
    ]
    assert [item["test"] for item in verdict["failing"]] == ["unit::tests.unit.t::broken"]
    assert verdict["runs"][1] == {"name": "run-2", "seed": 22, "profile": "pr"}


def test_skips_are_not_failures(tmp_path: Path) -> None:
    runs = [
        _run(tmp_path, "run-1", 1, sometimes="skipped"),
        _run(tmp_path, "run-2", 2, sometimes="passed"),
    ]
    assert judge(runs)["flaky"] == []


def test_exit_status_and_report_file(tmp_path: Path) -> None:
    output = tmp_path / "flaky.json"
    steady = [_run(tmp_path, f"ok-{i}", i, one="passed") for i in (1, 2)]
    assert main([*map(str, steady), "--output", str(output)]) == 0
    assert json.loads(output.read_text())["flaky"] == []
    wobbly = [_run(tmp_path, "w-1", 1, one="passed"), _run(tmp_path, "w-2", 2, one="failed")]
    assert main([*map(str, wobbly), "--output", str(output)]) == 1
    assert len(json.loads(output.read_text())["flaky"]) == 1
    # No results at all (every run crashed before its tests) is a failure too, never "none".
    assert main([str(tmp_path / "empty"), "--output", str(output)]) == 1
