"""The coverage gate: the total for app/ and a floor per package, on crafted `coverage json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tools import coverage_gate
from tests.tools.coverage_gate import Tally, display, evaluate, main, package_of, tally_packages

SCRIPT = Path(coverage_gate.__file__)


def _file(statements: int, covered: int, branches: int = 0, covered_branches: int = 0) -> Any:
    total = statements + branches
    percent = 100.0 * (covered + covered_branches) / total if total else 100.0
    return {
        "executed_lines": [],
        "summary": {
            "covered_lines": covered,
            "num_statements": statements,
            "percent_covered": percent,
            "percent_covered_display": f"{percent:.0f}",
            "missing_lines": statements - covered,
            "excluded_lines": 0,
            "num_branches": branches,
            "num_partial_branches": 0,
            "covered_branches": covered_branches,
            "missing_branches": branches - covered_branches,
        },
    }


def _report(tmp_path: Path, files: dict[str, Any]) -> Path:
    path = tmp_path / "coverage.json"
    data = {"meta": {"format": 3, "branch_coverage": True}, "files": files, "totals": {}}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("filename", "package"),
    [
        ("app/main.py", "app"),
        ("app/__init__.py", "app"),
        ("app/auth/service.py", "app/auth"),
        ("app/kit/deep/nested.py", "app/kit"),
        ("app\\db\\rls.py", "app/db"),
        ("/home/ci/vetify/app/db/rls.py", "app/db"),
        ("tests/app/x.py", None),
        ("fixtures/demo.py", None),
    ],
)
def test_package_of(filename: str, package: str | None) -> None:
    assert package_of(filename) == package


def test_percent_is_coveragepy_combined_lines_and_branches() -> None:
    assert Tally(statements=80, covered_lines=70, branches=20, covered_branches=10).percent == 80.0
    assert Tally().percent == 100.0  # nothing to cover, as coverage.py says


def test_packages_are_summed_over_their_files() -> None:
    data = {
        "files": {
            "app/auth/a.py": _file(10, 10, 4, 2),
            "app/auth/b.py": _file(10, 5),
            "app/main.py": _file(3, 3),
            "fixtures/demo.py": _file(100, 0),
        }
    }
    packages = tally_packages(data)
    assert packages == {"app": Tally(3, 3, 0, 0), "app/auth": Tally(20, 15, 4, 2)}


def test_summary_without_branch_keys_counts_lines_only() -> None:
    data = {"files": {"app/main.py": {"summary": {"covered_lines": 9, "num_statements": 10}}}}
    assert tally_packages(data)["app"].percent == 90.0


def test_display_rounds_down_so_a_failure_never_shows_the_floor() -> None:
    assert display(89.999) == "89.99%"
    assert display(90.0) == "90.00%"


def test_passes_when_every_package_and_the_total_clear_their_floors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(
        tmp_path,
        {
            "app/auth/service.py": _file(100, 95, 20, 18),
            "app/kit/problems.py": _file(50, 44, 10, 8),  # 86.67%
            "app/main.py": _file(10, 10),
        },
    )
    assert main([str(report)]) == 0
    out = capsys.readouterr().out
    for package in ("app/auth", "app/kit", "app ", "TOTAL"):
        assert package in out
    assert "86.66%" in out
    assert "FAIL" not in out


def test_a_package_below_its_floor_fails_even_when_the_total_is_high(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(
        tmp_path,
        {
            "app/auth/service.py": _file(1000, 1000, 200, 200),
            "app/db/rls.py": _file(40, 30, 10, 8),  # 76%
            "app/kit/problems.py": _file(10, 10),
        },
    )
    packages = coverage_gate.load_packages(report)
    assert coverage_gate.total_of(packages).percent > 98
    assert main([str(report)]) == 1
    captured = capsys.readouterr()
    assert "app/db 76.00% < 85.00%" in captured.err
    assert "app/auth" not in captured.err
    assert "app/kit" not in captured.err
    assert "TOTAL" not in captured.err


def test_the_total_below_its_floor_fails_even_when_every_package_clears_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _report(tmp_path, {"app/auth/a.py": _file(100, 88), "app/kit/b.py": _file(100, 87)})
    assert main([str(report)]) == 1
    err = capsys.readouterr().err
    assert "TOTAL 87.50% < 90.00%" in err
    assert "app/auth" not in err


def test_every_failing_package_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = _report(
        tmp_path,
        {"app/auth/a.py": _file(10, 1), "app/db/b.py": _file(10, 2), "app/main.py": _file(10, 10)},
    )
    assert main([str(report)]) == 1
    err = capsys.readouterr().err.strip()
    named = [failure.split()[0] for failure in err.split("FAILED: ", 1)[1].split("; ")]
    assert named == ["app/auth", "app/db", "TOTAL"]
    assert "app/auth 10.00% < 85.00%" in err


def test_floors_are_overridable_by_flags(tmp_path: Path) -> None:
    report = _report(tmp_path, {"app/auth/a.py": _file(100, 80), "app/kit/b.py": _file(100, 90)})
    assert main([str(report)]) == 1
    assert main([str(report), "--total", "85", "--package", "80"]) == 0
    assert main([str(report), "--total", "85", "--package", "81"]) == 1


def test_evaluate_lists_packages_then_the_total() -> None:
    verdicts = evaluate({"app": Tally(10, 10), "app/db": Tally(10, 8)}, package_floor=85)
    assert [(v.name, v.passed) for v in verdicts] == [
        ("app", True),
        ("app/db", False),
        ("TOTAL", True),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "unreadable"),
        ('{"totals": {}}', "no 'files' object"),
        ('{"files": {"app/main.py": {}}}', "no 'summary' object"),
        ('{"files": {"app/main.py": {"summary": {"num_statements": "ten"}}}}', "not a count"),
        ('{"files": {"fixtures/demo.py": {"summary": {}}}}', "no files under app/"),
    ],
)
def test_missing_or_malformed_report_fails_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "coverage.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main([str(path)]) == 1
    assert message in capsys.readouterr().err


def test_runs_as_the_tox_coverage_env_runs_it(tmp_path: Path) -> None:
    report = _report(tmp_path, {"app/db/rls.py": _file(10, 5)})
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(SCRIPT), str(report)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "app/db 50.00% < 85.00%" in result.stderr


def test_the_ratchet_fails_when_a_package_has_more_unrun_lines_than_its_baseline(tmp_path):
    from tests.tools.coverage_gate import Tally, ratchet

    packages = {"app/auth": Tally(100, 95, 20, 18), "app/kit": Tally(50, 50, 10, 10)}

    assert ratchet(packages, {"app/auth": 7, "app/kit": 0}) == []
    assert ratchet(packages, {"app/auth": 6, "app/kit": 0}) == [
        "app/auth: 7 unrun lines/branches, baseline 6"
    ]
    # A package the baseline never saw starts at zero unrun.
    assert ratchet({**packages, "app/new": Tally(10, 9)}, {"app/auth": 7}) == [
        "app/new: 1 unrun lines/branches, baseline 0"
    ]
