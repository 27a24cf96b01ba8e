"""The quality report: crafted inputs in a temporary reports/ folder, never the real one."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.tools import report
from tests.tools.report import NO_JUNIT, STAGES, build, main, read_junit, read_tox

SCRIPT = Path(report.__file__)
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests">
  <testsuite name="pytest" errors="2" failures="2" skipped="1" tests="6" time="12.5">
    <testcase classname="tests.unit.test_a" name="test_ok" time="0.10"/>
    <testcase classname="tests.unit.test_a" name="test_ok_too" time="3.25"/>
    <testcase classname="tests.unit.test_a" name="test_broken" time="0.20">
      <failure message="assert 1 == 2">assert 1 == 2</failure>
    </testcase>
    <testcase classname="tests.unit.test_a" name="test_teardown" time="0.30">
      <failure message="boom">boom</failure>
      <error message="failed on teardown">teardown</error>
    </testcase>
    <testcase classname="" name="tests.unit.test_b" time="0.00">
      <error message="collection failure">ImportError</error>
    </testcase>
    <testcase classname="tests.unit.test_a" name="test_later" time="0.01">
      <skipped type="pytest.skip" message="later">skipped</skipped>
    </testcase>
  </testsuite>
</testsuites>
"""


class _Text(HTMLParser):
    """Table rows (cell texts) and the tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


def _text(page: str) -> str:
    """The page's text, tags dropped and white space collapsed."""
    parser = _Text()
    texts: list[str] = []
    parser.handle_data = texts.append  # type: ignore[method-assign]
    parser.feed(page)
    return " ".join("".join(texts).split())


def _row(page: str, first: str) -> list[str]:
    rows = [row for row in _parse(page).rows if row and row[0] == first]
    assert len(rows) == 1, rows
    return rows[0]


def _junit(reports: Path, stage: str, cases: str, time: str = "1.0") -> None:
    reports.mkdir(parents=True, exist_ok=True)
    xml = f'<testsuites><testsuite name="pytest" time="{time}">{cases}</testsuite></testsuites>'
    (reports / f"junit-{stage}.xml").write_text(xml, encoding="utf-8")


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    folder = tmp_path / "reports"
    folder.mkdir()
    return folder


# -- stages ----------------------------------------------------------------------------------------
def test_junit_counts_failures_errors_and_skips_per_testcase(reports: Path) -> None:
    (reports / "junit-unit.xml").write_text(JUNIT, encoding="utf-8")
    stage = read_junit("unit", reports / "junit-unit.xml")
    assert (stage.passed, stage.failed, stage.errors, stage.skipped) == (2, 2, 2, 1)
    assert stage.seconds == 12.5
    assert not stage.ok
    assert [case.outcome for case in stage.cases] == [
        "passed",
        "passed",
        "failed",
        "error",
        "error",
        "skipped",
    ]


def test_stages_table_shows_counts_wall_time_and_result(reports: Path) -> None:
    (reports / "junit-unit.xml").write_text(JUNIT, encoding="utf-8")
    _junit(reports, "contract", '<testcase classname="c" name="t" time="0.5"/>', time="61.24")
    page = build(reports, now=NOW)
    assert _row(page, "unit") == ["unit", "failed", "2", "2", "2", "1", "12.5 s", "n/a", "20 s"]
    assert _row(page, "contract") == [
        *["contract", "passed", "1", "0", "0", "0", "61.2 s", "n/a", "300 s"]
    ]


def test_missing_junit_is_not_run_and_lint_type_point_to_tox(reports: Path) -> None:
    page = build(reports, now=NOW)
    assert _row(page, "lint")[1] == "see tox output"
    assert _row(page, "type")[1] == "see tox output"
    assert _row(page, "coverage")[1] == "see tox output"
    for stage in set(STAGES) - NO_JUNIT:
        assert _row(page, stage)[1] == "not run"


def _tox(path: Path, **envs: tuple[bool, float] | tuple[bool, float, float]) -> Path:
    """A file as `tox --result-json` writes it, with ``envs``' results: (success, seconds), and
    when the last command ended if given."""
    record = {
        "toxversion": "4.30",
        "testenvs": {
            name: {
                "setup": [],
                "test": [{"start": result[2] - 1, "end": result[2]}] if len(result) > 2 else [],
                "result": {
                    "success": result[0],
                    "exit_code": 0 if result[0] else 1,
                    "duration": result[1],
                },
            }
            for name, result in envs.items()
        },
    }
    _json(path, record)
    return path


def test_a_stage_tox_failed_is_failed_though_it_wrote_no_junit(reports: Path) -> None:
    """Issue 17: the report said "Stages with failures: none" while lint had failed."""
    _junit(reports, "security", '<testcase classname="s" name="t" time="0.5"/>')
    tox = read_tox(
        [_tox(reports / "tox.json", lint=(False, 3.2), type=(True, 21.0), security=(False, 400.0))]
    )
    page = build(reports, now=NOW, tox=tox)
    assert _row(page, "lint")[:2] == ["lint", "failed"]
    assert _row(page, "lint")[-2:] == ["3.2 s", "300 s"]
    assert _row(page, "type")[:2] == ["type", "passed"]
    # Its tests passed, bandit (a later command of the stage) failed: the stage failed.
    assert _row(page, "security")[:3] == ["security", "failed", "1"]
    assert "Stages with failures: lint, security" in _text(page)


def test_budgets_are_judged_on_tox_wall_time(reports: Path) -> None:
    tox = read_tox(
        [
            _tox(reports / "tox-unit.json", unit=(True, 25.0)),
            _tox(reports / "tox-rest.json", integration=(True, 290.0), load=(True, 900.0)),
        ]
    )
    table = report.budget_table(report.read_stages(reports, tox)).splitlines()
    assert table[1].split() == ["unit", "passed", "25", "s", "20", "s", "over", "budget"]
    assert table[2].split() == ["integration", "passed", "290", "s", "300", "s"]
    assert table[3].split() == ["load", "passed", "900", "s", "nightly"]
    assert table[-1].split() == ["pr", "set", "315", "s", "900", "s"]
    page = build(reports, now=NOW, tox=tox)
    assert "The pr set: 315 s of tox's wall time against a budget of 900 s: within budget" in (
        _text(page)
    )


def test_stages_one_run_ran_side_by_side_count_once_in_the_pr_set(reports: Path) -> None:
    """`.ci/run` runs the one-core stages two at a time, then the rest in turn: the pr set is
    the time its runs took. Each CI job is a run of its own (another machine): they add up."""
    side_by_side = _tox(
        reports / "tox-one-core.json",
        lint=(True, 5.0, 1005.0),
        type=(True, 28.0, 1028.0),
        unit=(True, 35.0, 1040.0),  # from 1005, beside type and then e2e
        e2e=(True, 29.0, 1057.0),  # from 1028
    )
    in_turn = _tox(
        reports / "tox-all-cores.json",
        integration=(True, 300.0, 1360.0),
        load=(True, 50.0, 1410.0),  # nightly: not in the pr set
        coverage=(True, 6.0, 1416.0),
    )
    tox = read_tox([side_by_side, in_turn])
    stages = report.read_stages(reports, tox)
    assert report.pr_wall_time(stages) == 57.0 + 306.0
    assert report.budget_table(stages).splitlines()[-1].split() == [
        "pr",
        "set",
        "363",
        "s",
        "900",
        "s",
    ]

    jobs = [
        _tox(reports / f"tox-{name}.json", **{name: (True, 100.0, 2000.0)})
        for name in ("unit", "integration", "security")
    ]
    assert report.pr_wall_time(report.read_stages(reports, read_tox(jobs))) == 300.0


def test_unreadable_tox_results_are_left_out(reports: Path) -> None:
    (reports / "garbled.json").write_text("{", encoding="utf-8")
    _json(reports / "odd.json", {"testenvs": {"unit": {"result": {"success": "yes"}}, "e2e": 3}})
    good = _tox(reports / "tox.json", e2e=(True, 30.0))
    assert read_tox(
        [reports / "garbled.json", reports / "odd.json", reports / "none.json", good]
    ) == {"e2e": report.ToxResult(True, 0, 30.0, run=3)}


def test_where_the_time_goes_per_stage_and_module(reports: Path) -> None:
    _junit(
        reports,
        "integration",
        '<testcase classname="tests.integration.test_a" name="one" time="3"/>'
        '<testcase classname="tests.integration.test_a" name="two" time="5"/>'
        '<testcase classname="tests.integration.test_b" name="one" time="2"/>',
    )
    page = build(reports, now=NOW)
    start = page.index("<h2>Where the time goes")
    rows = _parse(page[start : page.index("<h2>", start + 1)]).rows
    assert rows[1:] == [
        ["tests.integration.test_a", "2", "8.0 s", "80%"],
        ["tests.integration.test_b", "1", "2.0 s", "20%"],
    ]


def test_flaky_tests_from_the_repeat_runs(reports: Path) -> None:
    page = build(reports, now=NOW)
    assert "not run: the nightly repeat runs write flaky.json" in _text(page)
    runs = [{"name": f"run-{i}", "seed": i, "profile": "pr"} for i in (1, 2, 3)]
    flaky = {
        "test": "unit::tests.unit.test_a::test_x",
        "outcomes": {"run-1": "passed", "run-2": "failed", "run-3": "passed"},
    }
    _json(reports / "flaky.json", {"runs": runs, "flaky": [], "failing": []})
    assert "none: every test had one outcome" in _text(build(reports, now=NOW))
    _json(reports / "flaky.json", {"runs": runs, "flaky": [flaky], "failing": []})
    assert _row(build(reports, now=NOW), "unit::tests.unit.test_a::test_x") == [
        "unit::tests.unit.test_a::test_x",
        "run-1: passed, run-2: failed, run-3: passed",
    ]


def test_unreadable_junit_is_reported_not_raised(reports: Path) -> None:
    (reports / "junit-e2e.xml").write_text("<testsuites><testsuite>", encoding="utf-8")
    page = build(reports, now=NOW)
    assert _row(page, "e2e")[1].startswith("unreadable")


def test_suite_without_time_sums_its_testcases(reports: Path) -> None:
    (reports / "junit-load.xml").write_text(
        '<testsuite><testcase name="a" time="0.5"/><testcase name="b" time="0.25"/></testsuite>',
        encoding="utf-8",
    )
    stage = read_junit("load", reports / "junit-load.xml")
    assert (stage.passed, stage.seconds, stage.ok) == (2, 0.75, True)
    assert [case.name for case in stage.cases] == ["a", "b"]


def test_slowest_fifteen_tests_across_stages(reports: Path) -> None:
    _junit(reports, "unit", "".join(f'<testcase name="u{i}" time="{i}"/>' for i in range(10)))
    _junit(reports, "e2e", "".join(f'<testcase name="e{i}" time="{i}.5"/>' for i in range(10)))
    page = build(reports, now=NOW)
    start = page.index("<h2>Slowest")
    section = page[start : page.index("<h2>", start + 1)]
    rows = _parse(section).rows[1:]
    assert len(rows) == 15
    assert rows[0] == ["9.50 s", "e2e", "e9", "passed"]
    assert rows[1] == ["9.00 s", "unit", "u9", "passed"]
    times = [float(row[0].removesuffix(" s")) for row in rows]
    assert times == sorted(times, reverse=True)


def test_test_names_are_escaped(reports: Path) -> None:
    name = "test_x[&lt;script&gt;alert(1)&lt;/script&gt;]"  # XML-escaped in the JUnit file
    _junit(reports, "unit", f'<testcase classname="t" name="{name}" time="1"><failure/></testcase>')
    page = build(reports, now=NOW)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not [tag for tag, _ in _parse(page).tags if tag == "script"]


# -- coverage --------------------------------------------------------------------------------------
def _summary(statements: int, covered: int, branches: int, covered_branches: int) -> Any:
    return {
        "summary": {
            "num_statements": statements,
            "covered_lines": covered,
            "num_branches": branches,
            "covered_branches": covered_branches,
        }
    }


def test_coverage_per_package_as_the_gate_computes_it(reports: Path) -> None:
    _json(
        reports / "coverage.json",
        {
            "files": {
                "app/auth/service.py": _summary(100, 100, 20, 20),
                "app/db/rls.py": _summary(40, 30, 10, 8),
                "app/main.py": _summary(10, 9, 0, 0),
            }
        },
    )
    page = build(reports, now=NOW)
    assert _row(page, "app/auth") == ["app/auth", "100", "20", "100.00%", "85.00%", "ok"]
    assert _row(page, "app/db") == ["app/db", "40", "10", "76.00%", "85.00%", "below floor"]
    assert _row(page, "app")[3] == "90.00%"
    assert _row(page, "TOTAL") == ["TOTAL", "150", "30", "92.77%", "90.00%", "ok"]
    assert "coverage/index.html" not in page


def test_coverage_links_the_html_report_when_it_exists(reports: Path) -> None:
    _json(reports / "coverage.json", {"files": {"app/main.py": _summary(1, 1, 0, 0)}})
    (reports / "coverage").mkdir()
    (reports / "coverage" / "index.html").write_text("<html></html>", encoding="utf-8")
    page = build(reports, now=NOW)
    assert ("a", {"href": "coverage/index.html"}) in _parse(page).tags


def test_unreadable_coverage_is_reported_not_raised(reports: Path) -> None:
    (reports / "coverage.json").write_text("{", encoding="utf-8")
    assert "unreadable" in build(reports, now=NOW)


# -- load, chaos, screenshot -----------------------------------------------------------------------
STATS = {
    "users": 20,
    "seconds": 60,
    "requests": 12345,
    "failures": 3,
    "rps": 205.75,
    "p95_budget_ms": 100,
    "endpoints": [
        {
            "name": "GET /pets",
            "requests": 10000,
            "failures": 0,
            "p50_ms": 12,
            "p95_ms": 40,
            "p99_ms": 80,
        },
        {
            "name": "POST /appointments <b>",
            "requests": 2345,
            "failures": 3,
            "p50_ms": 30,
            "p95_ms": 120,
            "p99_ms": 300,
        },
    ],
}


def test_load_summary_table_chart_and_link(reports: Path) -> None:
    _json(reports / "load" / "stats.json", STATS)
    (reports / "load" / "report.html").write_text("<html></html>", encoding="utf-8")
    page = build(reports, now=NOW)
    assert _row(page, "20") == ["20", "60.0 s", "12,345", "3", "205.8", "100 ms"]
    assert _row(page, "GET /pets") == ["GET /pets", "10,000", "0", "12", "40", "80"]
    assert _row(page, "POST /appointments <b>")[4] == "120"
    assert "<b>" not in page
    rects = [attrs for tag, attrs in _parse(page).tags if tag == "rect"]
    assert [float(attrs["width"] or 0) for attrs in rects] == [140.0, 420.0]
    assert [attrs["fill"] for attrs in rects] == ["#3b6fb6", "#b3261e"]  # over the budget: red
    assert [attrs["x1"] for tag, attrs in _parse(page).tags if tag == "line"] == ["610.0"]
    assert ("a", {"href": "load/report.html"}) in _parse(page).tags


def test_load_stats_with_odd_values_still_render(reports: Path) -> None:
    _json(reports / "load" / "stats.json", {"users": "many", "endpoints": [{"name": "x"}, 3]})
    page = build(reports, now=NOW)
    assert _row(page, "x") == ["x", "n/a", "n/a", "n/a", "n/a", "n/a"]
    assert _row(page, "n/a") == ["n/a", "n/a s", "n/a", "n/a", "n/a", "n/a"]
    assert "<line" not in page
    assert "load/report.html" not in page


def test_chaos_scenarios_pass_fail_table(reports: Path) -> None:
    _json(
        reports / "chaos.json",
        [
            {"scenario": "database down", "passed": True, "details": "503 with Retry-After"},
            {
                "scenario": "redis slow",
                "passed": False,
                "details": {"p95_ms": 9000, "mode": "latency"},
                "error": "AssertionError: p95 <too> slow",
            },
            {"scenario": "<script>x</script>", "passed": "yes", "details": "not a bool"},
        ],
    )
    page = build(reports, now=NOW)
    assert _row(page, "database down") == ["database down", "passed", "503 with Retry-After"]
    assert _row(page, "redis slow") == [
        "redis slow",
        "failed",
        "p95_ms=9000, mode=latencyAssertionError: p95 <too> slow",
    ]
    assert _row(page, "<script>x</script>")[1] == "failed"
    assert "<script>" not in page
    assert "1 of 3 scenarios passed" in page


def test_screenshot_is_a_relative_image(reports: Path) -> None:
    (reports / "e2e").mkdir()
    (reports / "e2e" / "docs.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    tags = _parse(build(reports, now=NOW)).tags
    assert [attrs["src"] for tag, attrs in tags if tag == "img"] == ["e2e/docs.png"]


# -- the page as a whole ---------------------------------------------------------------------------
def test_every_input_missing_still_writes_a_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "git_commit", lambda: None)
    reports = tmp_path / "absent"
    assert main(["--reports", str(reports)]) == 0
    page = (reports / "index.html").read_text(encoding="utf-8")
    for text in (
        "not run (no coverage.json)",
        "no test timings",
        "not run (no load/stats.json)",
        "not run (no chaos.json)",
        "no screenshot",
    ):
        assert text in page
    assert "commit" not in page
    assert [tag for tag, _ in _parse(page).tags if tag in ("img", "svg", "a", "script")] == []


def test_header_has_timestamp_and_commit_and_page_fetches_nothing(reports: Path) -> None:
    _json(reports / "load" / "stats.json", STATS)
    page = build(reports, now=NOW, commit="0123abc")
    assert "Generated 2025-01-02 03:04:05 UTC from commit <code>0123abc</code>" in page
    for tag, attrs in _parse(page).tags:
        assert tag not in ("script", "link", "iframe")
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http:", "https:", "//"))


def test_links_are_relative_to_an_output_elsewhere(tmp_path: Path, reports: Path) -> None:
    (reports / "e2e").mkdir()
    (reports / "e2e" / "docs.png").write_bytes(b"")
    page = build(reports, tmp_path / "site" / "index.html", now=NOW)
    assert 'src="../reports/e2e/docs.png"' in page


def test_git_commit_without_git_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report.shutil, "which", lambda _: None)
    assert report.git_commit() is None


def test_git_commit_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert report.git_commit(tmp_path) is None


def test_write_failure_still_exits_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(report, "git_commit", lambda: None)
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    assert main(["--reports", str(tmp_path), "--output", str(blocker / "index.html")]) == 0
    assert "not written" in capsys.readouterr().err


def test_runs_as_the_tox_coverage_env_runs_it(reports: Path) -> None:
    _junit(reports, "unit", '<testcase name="a" time="0.1"/>')
    result = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(SCRIPT), "--reports", str(reports)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert _row((reports / "index.html").read_text(encoding="utf-8"), "unit")[1] == "passed"


def test_ci_runs_every_stage_once_and_combines_coverage_last() -> None:
    """`.ci/run` schedules tox.ini's ``one_core`` and ``all_cores`` labels: together they are
    the pr set and the nightly stages, each once, and coverage comes after every stage whose
    data it combines."""
    tox = configparser.ConfigParser()
    tox.read(report.ROOT / "tox.ini")
    labels: dict[str, list[str]] = {}
    for line in tox["tox"]["labels"].splitlines():
        name, _, envs = line.partition("=")
        if envs:
            labels[name.strip()] = [env.strip() for env in envs.split(",")]
    scheduled = labels["one_core"] + labels["all_cores"]
    assert sorted(scheduled) == sorted(labels["pr"] + labels["nightly"])
    assert len(set(scheduled)) == len(scheduled)
    assert scheduled[-1] == "coverage"
    assert set(report.STAGES) == set(scheduled)
