"""The quality report: one static page, ``reports/index.html``, that a reviewer opens first.

    python tests/tools/report.py [--reports DIR] [--output FILE]

It gathers what the stages left in ``reports/``: every stage's JUnit XML (``junit-<stage>.xml``),
coverage per package (``coverage.json``, computed as the coverage gate does), the slowest tests,
the load test summary (``load/stats.json``), the chaos scenarios (``chaos.json``) and the e2e
screenshot (``e2e/docs.png``). A missing input is shown as "not run", never an error. The page
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

STAGES = ("lint", "type", "unit", "integration", "contract", "security", "e2e", "load", "chaos")
NO_JUNIT = frozenset({"lint", "type"})  # tox output is their only record
SLOWEST = 15


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

    @property
    def ok(self) -> bool:
        return self.state == "ran" and self.failed == 0 and self.errors == 0


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


def stages_section(stages: Sequence[Stage]) -> str:
    rows = []
    for stage in stages:
        if stage.state != "ran":
            detail = f": {stage.note}" if stage.note else ""
            rows.append(
                [e(stage.name), f'<span class="none">{e(stage.state + detail)}</span>'] + [""] * 5
            )
            continue
        skipped = (
            e(stage.skipped) if not stage.skipped else f'<span class="warn">{stage.skipped}</span>'
        )
        rows.append(
            [
                e(stage.name),
                _badge(stage.ok),
                e(stage.passed),
                f'<span class="fail">{stage.failed}</span>' if stage.failed else "0",
                f'<span class="fail">{stage.errors}</span>' if stage.errors else "0",
                skipped,
                e(f"{stage.seconds:.1f} s"),
            ]
        )
    headers = ["stage", "result", "passed", "failed", "errors", "skipped", "wall time"]
    return "<h2>Stages</h2>" + _table(headers, rows, {2, 3, 4, 5, 6})


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
    failing = [stage.name for stage in stages if stage.state == "ran" and not stage.ok]
    not_run = [stage.name for stage in stages if stage.state in ("not run", "unreadable")]
    items = [
        "<li>Stages with failures: "
        + (_badge(False, ", ".join(failing)) if failing else _badge(True, "none"))
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
) -> str:
    """The page's HTML, from whatever ``reports`` holds."""
    page = Page(reports, output if output is not None else reports / "index.html")
    stages = [read_junit(stage, reports / f"junit-{stage}.xml") for stage in STAGES]
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
            '<p class="muted">lint and type write no JUnit report: their result is in the tox'
            " output.</p>",
            coverage_section(page),
            slowest_section(slowest(stages)),
            load_section(page),
            chaos_section(page),
            mutation_section(page),
            screenshot_section(page),
            "</body></html>\n",
        ]
    )


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
    args = parser.parse_args(argv)
    output: Path = args.output or args.reports / "index.html"
    try:
        page = build(args.reports, output, commit=git_commit())
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(page, encoding="utf-8")
    except Exception as exc:  # it reports; the gates decide, so never fail the run here
        print(f"quality report: not written: {exc!r}", file=sys.stderr)
        return 0
    print(f"quality report: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
