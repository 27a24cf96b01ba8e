"""The quality report: one static page, ``reports/index.html``, that a reviewer opens first.

    python tests/tools/report.py [--reports DIR] [--output FILE] [--tox-result FILE ...]
                                 [--budgets]

It gathers what the stages left in ``reports/``: tox's own record of each stage (``--tox-result``:
the files ``tox --result-json`` writes: its result and wall time, lint and type included),
every stage's JUnit XML (``junit-<stage>.xml``: its tests, and where their time went),
coverage per package (``coverage.json``, computed as the coverage gate does), the slowest tests,
the flaky tests of the nightly repeat runs (``flaky.json``), the load test summary
(``load/stats.json``), the chaos scenarios (``chaos.json``) and the e2e screenshot
(``e2e/docs.png``). ``--budgets`` also prints each stage's wall time against its budget. The
coverage stage writes the page inside the tox run, before tox has its results; `.ci/run` writes
it again after, with them. A missing input is shown as "not run", never an error. The page
has inline CSS only: no JavaScript, no fetches, every text escaped. It always exits 0: it
reports, the gates decide. Standard library only (the tox ``coverage`` env has only coverage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import math
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]

if __package__ in (None, ""):  # run as a script: make `tests.tools` importable
    sys.path.insert(0, str(ROOT))

from tests.tools.coverage_gate import (  # noqa: E402
    TOTAL_NAME,
    CoverageDataError,
    display,
    evaluate,
    load_packages,
    total_of,
)

PR_STAGES = ("lint", "type", "unit", "integration", "contract", "security", "e2e", "coverage")
NIGHTLY_STAGES = ("load", "chaos")
STAGES = PR_STAGES + NIGHTLY_STAGES
NO_JUNIT = frozenset({"lint", "type", "coverage"})  # tox's record is their only one
SLOWEST = 15
SLOWEST_FILES = 8

BUDGETS = {stage: 300.0 for stage in PR_STAGES} | {"unit": 20.0}
"""Seconds of wall time per pr stage on the project's 2-core machine, the environment's
creation from a warm package cache included (issue 17)."""
PR_BUDGET = 900.0
"""The pr set as a whole."""


def e(value: object) -> str:
    """Escape any text for HTML (content and attribute values)."""
    return html.escape(str(value), quote=True)


# -- JUnit -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    stage: str
    name: str
    seconds: float
    outcome: str  # passed | failed | error | skipped


@dataclass(frozen=True)
class ToxResult:
    """tox's record of one environment: did every command succeed, and its wall time; the
    ``tox --result-json`` file it came from and when its last command ended (epoch seconds), so
    that stages one tox run ran side by side count once (:func:`pr_wall_time`)."""

    success: bool
    exit_code: int | None
    seconds: float
    run: int = 0
    ended: float | None = None


@dataclass
class Stage:
    name: str
    state: str  # ran | not run | see tox output | unreadable
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    note: str = ""
    cases: list[Case] = field(default_factory=list)
    tox: ToxResult | None = None

    @property
    def ran(self) -> bool:
        return self.state == "ran" or self.tox is not None

    @property
    def ok(self) -> bool:
        tests_ok = self.failed == 0 and self.errors == 0
        if self.tox is not None:
            return self.tox.success and tests_ok and self.state != "unreadable"
        return self.state == "ran" and tests_ok


def _seconds(value: str | None) -> float:
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _outcome(case: ET.Element) -> str:
    # A test that fails and then errors in teardown carries both; it counts in both columns.
    if case.find("error") is not None:
        return "error"
    if case.find("failure") is not None:
        return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def read_junit(stage: str, path: Path) -> Stage:
    """A stage's counts from its JUnit XML, counted per testcase (not from suite attributes)."""
    if not path.is_file():
        return Stage(stage, "see tox output" if stage in NO_JUNIT else "not run")
    try:
        # Our own pytest output, not untrusted input.
        root = ET.fromstring(path.read_bytes())  # noqa: S314
    except (OSError, ET.ParseError) as exc:
        return Stage(stage, "unreadable", note=str(exc))
    result = Stage(stage, "ran")
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        suite_cases = list(suite.iter("testcase"))
        for case in suite_cases:
            has_failure = case.find("failure") is not None
            has_error = case.find("error") is not None
            result.failed += has_failure
            result.errors += has_error
            if not (has_failure or has_error):
                if case.find("skipped") is not None:
                    result.skipped += 1
                else:
                    result.passed += 1
            classname = case.get("classname") or ""
            name = case.get("name") or "?"
            result.cases.append(
                Case(
                    stage,
                    f"{classname}::{name}" if classname else name,
                    _seconds(case.get("time")),
                    _outcome(case),
                )
            )
        if suite.get("time") is not None:
            result.seconds += _seconds(suite.get("time"))
        else:
            result.seconds += sum(_seconds(case.get("time")) for case in suite_cases)
    return result


def slowest(stages: Iterable[Stage], count: int = SLOWEST) -> list[Case]:
    cases = [case for stage in stages for case in stage.cases]
    return sorted(cases, key=lambda case: case.seconds, reverse=True)[:count]


def read_tox(paths: Iterable[Path]) -> dict[str, ToxResult]:
    """Each environment's result from ``tox --result-json`` files (one per CI job, or one for a
    whole run); an unreadable file or entry is left out, and its stage says "see tox output"."""
    results: dict[str, ToxResult] = {}
    for run, path in enumerate(paths):
        try:
            envs = json.loads(path.read_text(encoding="utf-8")).get("testenvs", {})
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            continue
        for name, env in envs.items() if isinstance(envs, dict) else ():
            result = env.get("result") if isinstance(env, dict) else None
            if not isinstance(result, dict) or not isinstance(result.get("success"), bool):
                continue
            code = result.get("exit_code")
            results[name] = ToxResult(
                result["success"],
                code if isinstance(code, int) and not isinstance(code, bool) else None,
                _seconds(str(result.get("duration"))),
                run,
                _ended(env),
            )
    return results


def _ended(env: dict[str, Any]) -> float | None:
    """When the environment's last command (of its set-up or its commands) ended."""
    ends = [
        command.get("end")
        for part in ("setup", "test")
        for command in env.get(part) or []
        if isinstance(command, dict)
    ]
    times = [end for end in ends if isinstance(end, float | int) and not isinstance(end, bool)]
    return float(max(times)) if times else None


def pr_wall_time(stages: Iterable[Stage]) -> float:
    """The pr set's wall time: each tox run's pr stages as intervals of their wall time ending
    when they ended, those of one run that overlap (`.ci/run` runs the one-core stages two at a
    time) counted once; runs added up (CI's jobs, each its own run on its own machine)."""
    by_run: dict[int, list[tuple[float, float]]] = {}
    total = 0.0
    for stage in stages:
        if stage.name not in PR_STAGES or stage.tox is None:
            continue
        if stage.tox.ended is None:
            total += stage.tox.seconds
        else:
            span = (stage.tox.ended - stage.tox.seconds, stage.tox.ended)
            by_run.setdefault(stage.tox.run, []).append(span)
    for spans in by_run.values():
        reach = -math.inf
        for start, end in sorted(spans):
            total += max(0.0, end - max(start, reach))
            reach = max(reach, end)
    return total


def by_file(stage: Stage) -> list[tuple[str, int, float]]:
    """(test module, tests, seconds) of a stage, the slowest first: where its time went."""
    files: dict[str, list[float]] = {}
    for case in stage.cases:
        module = case.name.split("::", 1)[0] if "::" in case.name else case.name
        files.setdefault(module, []).append(case.seconds)
    rows = [(module, len(times), sum(times)) for module, times in files.items()]
    return sorted(rows, key=lambda row: row[2], reverse=True)


# -- JSON inputs -----------------------------------------------------------------------------------
class Unreadable(Exception):
    pass


def _load_json(path: Path) -> Any:
    """The parsed file, None when it does not exist; Unreadable when it cannot be parsed."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise Unreadable(f"{path.name}: {exc}") from exc


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, digits: int = 0) -> str:
    number = _num(value)
    if number is None:
        return "n/a"
    return f"{number:,.{digits}f}"


# -- page ------------------------------------------------------------------------------------------
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2329;
       padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d5dbe1; }
.meta, .muted { color: #5b6670; }
table { border-collapse: collapse; margin: .6rem 0; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #e4e8ec; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #137333; font-weight: 600; } .fail { color: #b3261e; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; } .none { color: #5b6670; font-style: italic; }
code { font-size: 12.5px; word-break: break-all; }
img { max-width: 100%; border: 1px solid #d5dbe1; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2329; }
"""


@dataclass(frozen=True)
class Page:
    reports: Path
    output: Path

    def href(self, target: Path) -> str:
        relative = Path(os.path.relpath(target, self.output.parent)).as_posix()
        return e(quote(relative))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """``rows`` hold HTML already escaped; ``numeric`` are right-aligned column indexes."""

    def cls(index: int) -> str:
        return ' class="n"' if index in numeric else ""

    head = "".join(f"<th{cls(i)}>{e(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(ok: bool, yes: str = "passed", no: str = "failed") -> str:
    return f'<span class="pass">{e(yes)}</span>' if ok else f'<span class="fail">{e(no)}</span>'


def _none(text: str) -> str:
    return f'<p class="none">{e(text)}</p>'


def _wall(stage: Stage) -> str:
    if stage.tox is None:
        return '<span class="none">n/a</span>'
    budget = BUDGETS.get(stage.name)
    text = e(f"{stage.tox.seconds:.1f} s")
    return f'<span class="warn">{text}</span>' if budget and stage.tox.seconds > budget else text


def stages_section(stages: Sequence[Stage]) -> str:
    rows = []
    for stage in stages:
        budget = BUDGETS.get(stage.name)
        timing = [
            e(f"{stage.seconds:.1f} s") if stage.state == "ran" else "",
            _wall(stage),
            e(f"{budget:.0f} s") if budget else '<span class="none">nightly</span>',
        ]
        if not stage.ran:
            detail = f": {stage.note}" if stage.note else ""
            rows.append(
                [e(stage.name), f'<span class="none">{e(stage.state + detail)}</span>']
                + [""] * 4
                + timing
            )
            continue
        skipped = (
            e(stage.skipped) if not stage.skipped else f'<span class="warn">{stage.skipped}</span>'
        )
        counted = stage.state == "ran"
        rows.append(
            [
                e(stage.name),
                _badge(stage.ok),
                e(stage.passed) if counted else "",
                f'<span class="fail">{stage.failed}</span>' if stage.failed else "0" * counted,
                f'<span class="fail">{stage.errors}</span>' if stage.errors else "0" * counted,
                skipped if counted else "",
                *timing,
            ]
        )
    headers = ["stage", "result", "passed", "failed", "errors", "skipped", "tests", "wall time"]
    out = ["<h2>Stages</h2>", _table([*headers, "budget"], rows, {2, 3, 4, 5, 6, 7, 8})]
    if any(stage.name in PR_STAGES and stage.tox for stage in stages):
        total = pr_wall_time(stages)
        verdict = _badge(total <= PR_BUDGET, "within budget", "over budget")
        out.append(
            f"<p>The pr set: {e(f'{total:.0f} s')} of tox's wall time against a budget of "
            f"{e(f'{PR_BUDGET:.0f} s')}: {verdict}.</p>"
        )
    out.append(
        '<p class="muted">"result" and "wall time" are tox\'s own (every command of the stage,'
        " its environment's set-up included); the counts and \"tests\" (the test session's time)"
        " come from the stage's JUnit report. Without tox's record a stage shows its tests"
        " only.</p>"
    )
    return "".join(out)


def durations_section(stages: Sequence[Stage]) -> str:
    """Per stage, the test modules that took the most time (JUnit's times summed)."""
    out = ["<h2>Where the time goes</h2>"]
    for stage in stages:
        files = by_file(stage)[:SLOWEST_FILES]
        if not files:
            continue
        total = sum(case.seconds for case in stage.cases) or 1.0
        rows = [
            [
                f"<code>{e(module)}</code>",
                e(count),
                e(f"{seconds:.1f} s"),
                e(f"{seconds / total:.0%}"),
            ]
            for module, count, seconds in files
        ]
        out.append(f"<h3>{e(stage.name)}</h3>")
        out.append(_table(["module", "tests", "time", "share"], rows, {1, 2, 3}))
    if len(out) == 1:
        return out[0] + _none("no test timings (no JUnit reports)")
    out.append(
        '<p class="muted">Each test\'s time is its set-up, call and tear-down; with a worker per'
        " core the stage takes less than their sum.</p>"
    )
    return "".join(out)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def flaky_section(page: Page) -> str:
    title = "<h2>Flaky tests</h2>"
    try:
        found = _load_json(page.reports / "flaky.json")
    except Unreadable as exc:
        return title + _none(f"unreadable: {exc}")
    if not isinstance(found, dict):
        return title + _none("not run: the nightly repeat runs write flaky.json (.ci/flakes)")
    runs = _list(found.get("runs"))
    flaky = [item for item in _list(found.get("flaky")) if isinstance(item, dict)]
    described = ", ".join(
        f"seed {run.get('seed', '?')} / {run.get('profile', '?')}"
        for run in runs
        if isinstance(run, dict)
    )
    out = [title, f'<p class="muted">{e(len(runs))} runs ({e(described)}).</p>']
    if not flaky:
        return "".join(out) + f"<p>{_badge(True, 'none')}: every test had one outcome.</p>"
    rows = [
        [
            f"<code>{e(item.get('test', '?'))}</code>",
            e(", ".join(f"{run}: {outcome}" for run, outcome in item.get("outcomes", {}).items())),
        ]
        for item in flaky
    ]
    return "".join(out) + _table(["test", "outcome per run"], rows, set())


def coverage_section(page: Page) -> str:
    out = ["<h2>Coverage</h2>"]
    path = page.reports / "coverage.json"
    if not path.is_file():
        return out[0] + _none("not run (no coverage.json)")
    try:
        packages = load_packages(path)
    except CoverageDataError as exc:
        return out[0] + _none(f"unreadable: {exc}")
    if not packages:
        return out[0] + _none("coverage.json lists no files under app/")
    tallies = {**packages, TOTAL_NAME: total_of(packages)}
    rows = []
    for verdict in evaluate(packages):
        tally = tallies[verdict.name]
        name = e(verdict.name)
        rows.append(
            [
                f"<strong>{name}</strong>" if verdict.name == TOTAL_NAME else name,
                e(tally.statements),
                e(tally.branches),
                e(display(verdict.percent)),
                e(display(verdict.floor)),
                _badge(verdict.passed, "ok", "below floor"),
            ]
        )
    out.append(
        _table(["package", "statements", "branches", "cover", "floor", "gate"], rows, {1, 2, 3, 4})
    )
    out.append(
        '<p class="muted">Lines and branches together, as coverage.py computes it.'
        " Every package has its own floor, so a well-tested package cannot hide another.</p>"
    )
    html_report = page.reports / "coverage" / "index.html"
    if html_report.is_file():
        out.append(f'<p><a href="{page.href(html_report)}">Line-by-line coverage report</a></p>')
    return "".join(out)


def slowest_section(cases: Sequence[Case]) -> str:
    title = f"<h2>Slowest {SLOWEST} tests</h2>"
    if not cases:
        return title + _none("no test timings (no JUnit reports)")
    rows = [
        [
            e(f"{case.seconds:.2f} s"),
            e(case.stage),
            f"<code>{e(case.name)}</code>",
            _badge(case.outcome in ("passed", "skipped"), case.outcome, case.outcome),
        ]
        for case in cases
    ]
    return title + _table(["time", "stage", "test", "outcome"], rows, {0})


def p95_chart(endpoints: Sequence[dict[str, Any]], budget: float | None = None) -> str:
    """A horizontal bar per endpoint, length proportional to its p95 latency; red over budget."""
    label_width, bar_width, row = 260, 420, 24
    values = [_num(endpoint.get("p95_ms")) or 0.0 for endpoint in endpoints]
    top = max([*values, budget or 0.0]) or 1.0
    height = row * len(endpoints) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 90}" '
        f'height="{height}" role="img" aria-label="p95 latency per endpoint">'
    ]
    for index, (endpoint, value) in enumerate(zip(endpoints, values, strict=True)):
        y = 4 + index * row
        name = str(endpoint.get("name", "?"))
        label = name if len(name) <= 40 else name[:39] + "…"
        width = bar_width * value / top
        colour = "#b3261e" if budget is not None and value > budget else "#3b6fb6"
        parts.append(
            f"<g><title>{e(name)}: p95 {value:.0f} ms</title>"
            f'<text x="0" y="{y + 15}">{e(label)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{width:.1f}" height="{row - 8}" '
            f'fill="{colour}"/>'
            f'<text x="{label_width + width + 6:.1f}" y="{y + 15}">{value:.0f} ms</text></g>'
        )
    if budget is not None:
        x = label_width + bar_width * budget / top
        parts.append(
            f"<g><title>p95 budget {budget:.0f} ms</title>"
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#9a6700" '
            'stroke-dasharray="4 3"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def load_section(page: Page) -> str:
    title = "<h2>Load test</h2>"
    try:
        stats = _load_json(page.reports / "load" / "stats.json")
    except Unreadable as exc:
        return title + _none(f"unreadable: {exc}")
    if stats is None:
        return title + _none("not run (no load/stats.json)")
    if not isinstance(stats, dict):
        return title + _none("unreadable: load/stats.json is not an object")
    failures, requests = _num(stats.get("failures")), _num(stats.get("requests"))
    budget = _num(stats.get("p95_budget_ms"))
    summary = [
        [
            _fmt(stats.get("users")),
            e(_fmt(stats.get("seconds"), 1) + " s"),
            e(_fmt(requests)),
            f'<span class="fail">{e(_fmt(failures))}</span>' if failures else e(_fmt(failures)),
            e(_fmt(stats.get("rps"), 1)),
            e(_fmt(budget) + " ms" if budget is not None else "n/a"),
        ]
    ]
    headers = ["users", "duration", "requests", "failures", "requests/s", "p95 budget"]
    out = [title, _table(headers, summary, {0, 1, 2, 3, 4, 5})]
    raw = stats.get("endpoints")
    endpoints = [item for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []
    if endpoints:
        rows = [
            [
                f"<code>{e(endpoint.get('name', '?'))}</code>",
                e(_fmt(endpoint.get("requests"))),
                e(_fmt(endpoint.get("failures"))),
                e(_fmt(endpoint.get("p50_ms"))),
                e(_fmt(endpoint.get("p95_ms"))),
                e(_fmt(endpoint.get("p99_ms"))),
            ]
            for endpoint in endpoints
        ]
        headers = ["endpoint", "requests", "failures", "p50 ms", "p95 ms", "p99 ms"]
        out.append(_table(headers, rows, {1, 2, 3, 4, 5}))
        out.append("<h3>p95 latency per endpoint</h3>" + p95_chart(endpoints, budget))
    report = page.reports / "load" / "report.html"
    if report.is_file():
        out.append(f'<p><a href="{page.href(report)}">Full load test report</a></p>')
    return "".join(out)


PALETTE = ("#3b6fb6", "#b3261e", "#137333", "#9a6700", "#6f42c1", "#0b7285", "#495057")


def p95_trend(path: Path) -> str:
    """The load trend (``load/trend.json``, written by tests/load): p95 per run, a line per
    endpoint class, over the runs of the latest run's length (smoke and full never mixed)."""
    try:
        trend = _load_json(path)
    except Unreadable as exc:
        return "<h3>p95 per night</h3>" + _none(f"unreadable: {exc}")
    raw = trend.get("runs") if isinstance(trend, dict) else None
    runs = [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []
    if not runs:
        return ""
    runs = [r for r in runs if r.get("length") == runs[-1].get("length")][-60:]
    width, height, left, colours = 640, 220, 48, PALETTE
    series: dict[str, list[tuple[int, float]]] = {}
    for index, run in enumerate(runs):
        classes = run.get("classes")
        for name, stats in classes.items() if isinstance(classes, dict) else ():
            value = _num(stats.get("p95_ms")) if isinstance(stats, dict) else None
            if value is not None:
                series.setdefault(str(name), []).append((index, value))
    top = max((v for points in series.values() for _, v in points), default=1.0) or 1.0
    step = (width - left - 110) / max(len(runs) - 1, 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        'role="img" aria-label="p95 latency per run and endpoint class">',
        f'<text x="0" y="12">{top:.0f} ms</text><text x="0" y="{height}">0</text>',
        f'<text x="{left}" y="{height + 20}">{e(runs[0].get("date", ""))}</text>',
        f'<text x="{width - 250}" y="{height + 20}">{e(runs[-1].get("date", ""))}</text>',
    ]
    for number, (name, points) in enumerate(sorted(series.items())):
        colour = colours[number % len(colours)]
        xy = [(left + i * step, height - (height - 10) * v / top) for i, v in points]
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(
            f"<g><title>{e(name)}: p95 {points[-1][1]:.0f} ms last run</title>"
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>'
            + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in xy)
            + f'<text x="{xy[-1][0] + 6:.1f}" y="{xy[-1][1] + 4:.1f}" style="fill:{colour}">'
            f"{e(name)}</text></g>"
        )
    parts.append("</svg>")
    return f"<h3>p95 per night ({e(runs[-1].get('length', '?'))})</h3>" + "".join(parts)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def chaos_section(page: Page) -> str:
    title = "<h2>Chaos scenarios</h2>"
    try:
        scenarios = _load_json(page.reports / "chaos.json")
    except Unreadable as exc:
        return title + _none(f"unreadable: {exc}")
    if scenarios is None:
        return title + _none("not run (no chaos.json)")
    if not isinstance(scenarios, list):
        return title + _none("unreadable: chaos.json is not a list")
    rows = []
    for item in scenarios:
        entry = item if isinstance(item, dict) else {"scenario": item}
        details = entry.get("details", "")
        if isinstance(details, dict):
            details = ", ".join(f"{key}={_plain(value)}" for key, value in details.items())
        cell = e(_plain(details))
        error = entry.get("error") or entry.get("teardown_error")
        if error:
            cell += f'<div class="fail"><code>{e(_plain(error)[:1000])}</code></div>'
        rows.append([e(entry.get("scenario", "?")), _badge(entry.get("passed") is True), cell])
    if not rows:
        return title + _none("chaos.json lists no scenarios")
    passed = sum(1 for item in scenarios if isinstance(item, dict) and item.get("passed") is True)
    summary = f'<p class="muted">{passed} of {len(rows)} scenarios passed.</p>'
    return title + summary + _table(["scenario", "result", "details"], rows, set())


def mutation_section(page: Page) -> str:
    """reports/mutation.json (tests/mutation, ADR 0017): score per package and every survivor."""
    title = "<h2>Mutation testing</h2>"
    try:
        report = _load_json(page.reports / "mutation.json") or {}
    except Unreadable as exc:
        return title + _none(f"unreadable: {exc}")
    packages = report.get("packages") if isinstance(report, dict) else None
    if not isinstance(packages, dict):
        return title + _none("not run (no mutation.json)")
    rows = [
        [e(name)]
        + [_fmt(numbers.get(key)) for key in ("killed", "timeout", "survived", "equivalent")]
        + [
            _badge(
                (_num(numbers.get("score")) or 0) >= 80,
                f"{_fmt(numbers.get('score'), 1)}%",
                f"{_fmt(numbers.get('score'), 1)}%",
            )
        ]
        for name, numbers in packages.items()
        if isinstance(numbers, dict)
    ]
    survivors = [s for s in report.get("survivors", []) if isinstance(s, dict)]
    summary = (
        f'<p class="muted">{e(report.get("mode", "?"))} run, {_fmt(report.get("seconds"))} s; '
        f"score {_fmt(report.get('score'), 1)}% (gate 80% per package); "
        f"{len(survivors)} surviving mutants.</p>"
    )
    listed = "".join(
        f"<details><summary><code>{e(s.get('file'))}:{e(s.get('line'))}</code></summary>"
        f"<pre><code>{e(s.get('diff', ''))}</code></pre></details>"
        for s in survivors
    )
    headers = ["package", "killed", "timed out", "survived", "equivalent", "score"]
    return title + summary + _table(headers, rows, {1, 2, 3, 4, 5}) + listed


def screenshot_section(page: Page) -> str:
    title = "<h2>End-to-end screenshot</h2>"
    image = page.reports / "e2e" / "docs.png"
    if not image.is_file():
        return title + _none("no screenshot (e2e/docs.png)")
    return title + f'<img src="{page.href(image)}" alt="The API docs page, as the e2e test saw it">'


def overview(stages: Sequence[Stage]) -> str:
    failing = [stage.name for stage in stages if stage.ran and not stage.ok]
    not_run = [
        stage.name
        for stage in stages
        if stage.tox is None and stage.state in ("not run", "unreadable")
    ]
    items = [
        "<li>Stages with failures: "
        + (_badge(False, no=", ".join(failing)) if failing else _badge(True, "none"))
        + "</li>"
    ]
    if not_run:
        items.append(f'<li>Not run: <span class="none">{e(", ".join(not_run))}</span></li>')
    return "<ul>" + "".join(items) + "</ul>"


def build(
    reports: Path,
    output: Path | None = None,
    *,
    now: dt.datetime | None = None,
    commit: str | None = None,
    tox: dict[str, ToxResult] | None = None,
) -> str:
    """The page's HTML, from whatever ``reports`` holds (and tox's results, when given)."""
    page = Page(reports, output if output is not None else reports / "index.html")
    stages = read_stages(reports, tox or {})
    generated = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    meta = f"Generated {e(generated)}"
    if commit:
        meta += f" from commit <code>{e(commit)}</code>"
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>Vetify quality report</title>",
            f"<style>{CSS}</style></head><body>",
            "<h1>Vetify quality report</h1>",
            f'<p class="meta">{meta}</p>',
            overview(stages),
            stages_section(stages),
            coverage_section(page),
            slowest_section(slowest(stages)),
            durations_section(stages),
            flaky_section(page),
            load_section(page),
            p95_trend(page.reports / "load" / "trend.json"),
            chaos_section(page),
            mutation_section(page),
            screenshot_section(page),
            "</body></html>\n",
        ]
    )


def read_stages(reports: Path, tox: dict[str, ToxResult]) -> list[Stage]:
    stages = []
    for name in STAGES:
        stage = read_junit(name, reports / f"junit-{name}.xml")
        stage.tox = tox.get(name)
        stages.append(stage)
    return stages


def budget_table(stages: Sequence[Stage]) -> str:
    """What `.ci/run` prints at its end: each stage's result and wall time beside its budget."""
    lines = [f"{'stage':<12} {'result':<8} {'wall time':>10} {'budget':>8}"]
    for stage in stages:
        if stage.tox is None:
            continue
        budget = BUDGETS.get(stage.name)
        over = " over budget" if budget and stage.tox.seconds > budget else ""
        limit = f"{budget:.0f} s" if budget else "nightly"
        result = "passed" if stage.ok else "FAILED"
        lines.append(f"{stage.name:<12} {result:<8} {stage.tox.seconds:>8.0f} s {limit:>8}{over}")
    pr = pr_wall_time(stages)
    over = " over budget" if pr > PR_BUDGET else ""
    lines.append(f"{'pr set':<12} {'':<8} {pr:>8.0f} s {PR_BUDGET:>6.0f} s{over}")
    return "\n".join(lines)


def git_commit(cwd: Path = ROOT) -> str | None:
    """``git rev-parse HEAD``, or None when git or the repository is not there."""
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [git, "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the quality report (reports/index.html).")
    parser.add_argument("--reports", type=Path, default=ROOT / "reports", help="inputs folder")
    parser.add_argument("--output", type=Path, help="the page (default: <reports>/index.html)")
    parser.add_argument(
        "--tox-result",
        type=Path,
        nargs="*",
        default=[],
        help="files written by `tox --result-json` (each stage's result and wall time)",
    )
    parser.add_argument(
        "--budgets", action="store_true", help="print each stage's wall time against its budget"
    )
    args = parser.parse_args(argv)
    output: Path = args.output or args.reports / "index.html"
    try:
        tox = read_tox(args.tox_result)
        page = build(args.reports, output, commit=git_commit(), tox=tox)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
        if args.budgets:
            print(budget_table(read_stages(args.reports, tox)))
    except Exception as exc:  # it reports; the gates decide, so never fail the run here
        print(f"quality report: not written: {exc!r}", file=sys.stderr)
        return 0
    print(f"quality report: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
