"""Coverage gates on coverage.py's JSON report: the total for app/ and a floor for every package.

A package is a top-level folder under ``app/`` (``app/auth``, ``app/kit``, ...); modules directly
in ``app/`` form the package ``app``. The per-package floor keeps one well-tested package from
hiding an untested one inside a healthy total. Percentages are computed as coverage.py does:
``(covered_lines + covered_branches) / (num_statements + num_branches)``, 100% when empty.

    python tests/tools/coverage_gate.py reports/coverage.json [--total 90] [--package 85]
        [--ratchet DETERMINISTIC.json --baseline tests/tools/coverage-baseline.json]

Prints a table of packages and exits 1 naming every package (and the total) below its floor.

The floors alone let coverage slide until it reaches them; the ratchet does not. It compares
the number of unrun lines and branches per package (from the in-process stages, whose coverage
is the same on every run) with a committed baseline: one more unrun line or branch fails, so
deleting the only test of a branch, or adding untested code, is caught. When coverage rises,
``--write-baseline`` records the new, lower counts.
Standard library only: the tox ``coverage`` env has nothing but ``coverage`` installed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

TOTAL_FLOOR = 90.0
PACKAGE_FLOOR = 85.0
SOURCE_ROOT = "app"
TOTAL_NAME = "TOTAL"


class CoverageDataError(Exception):
    """The coverage JSON is missing, unreadable or not in `coverage json` format."""


@dataclass(frozen=True)
class Tally:
    statements: int = 0
    covered_lines: int = 0
    branches: int = 0
    covered_branches: int = 0

    @property
    def unrun(self) -> int:
        return self.statements - self.covered_lines + self.branches - self.covered_branches

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.statements + other.statements,
            self.covered_lines + other.covered_lines,
            self.branches + other.branches,
            self.covered_branches + other.covered_branches,
        )

    @property
    def percent(self) -> float:
        """coverage.py's combined percentage (lines and branches together)."""
        total = self.statements + self.branches
        if total == 0:
            return 100.0
        return 100.0 * (self.covered_lines + self.covered_branches) / total


def display(percent: float) -> str:
    """Two decimals, rounded down, so a value below a floor never prints as reaching it."""
    return f"{math.floor(percent * 100) / 100:.2f}%"


def package_of(filename: str) -> str | None:
    """``app/auth/x.py`` -> ``app/auth``; ``app/main.py`` -> ``app``; outside app/ -> None."""
    path = PurePosixPath(filename.replace("\\", "/"))
    parts = path.parts
    # coverage.py reports files under the working directory relative to it; an absolute name
    # (a run from elsewhere) is matched on its first ``app`` folder.
    if path.is_absolute() and SOURCE_ROOT in parts:
        parts = parts[parts.index(SOURCE_ROOT) :]
    if len(parts) < 2 or parts[0] != SOURCE_ROOT:
        return None
    rest = parts[1:]
    if len(rest) <= 1:
        return SOURCE_ROOT
    return f"{SOURCE_ROOT}/{rest[0]}"


def _count(summary: Mapping[str, Any], key: str, filename: str) -> int:
    value = summary.get(key, 0)  # num_branches/covered_branches are absent without branch=true
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CoverageDataError(f"{filename}: summary.{key} is not a count: {value!r}")
    return value


def tally_packages(data: Any) -> dict[str, Tally]:
    """Per-package tallies from a parsed `coverage json` report (files outside app/ ignored)."""
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise CoverageDataError("not a `coverage json` report: no 'files' object")
    packages: dict[str, Tally] = {}
    for filename, entry in data["files"].items():
        package = package_of(str(filename))
        if package is None:
            continue
        summary = entry.get("summary") if isinstance(entry, dict) else None
        if not isinstance(summary, dict):
            raise CoverageDataError(f"{filename}: no 'summary' object")
        tally = Tally(
            statements=_count(summary, "num_statements", filename),
            covered_lines=_count(summary, "covered_lines", filename),
            branches=_count(summary, "num_branches", filename),
            covered_branches=_count(summary, "covered_branches", filename),
        )
        packages[package] = packages.get(package, Tally()) + tally
    return dict(sorted(packages.items()))


def load_packages(path: Path) -> dict[str, Tally]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CoverageDataError(f"{path}: not found (did `coverage json` run?)") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CoverageDataError(f"{path}: unreadable: {exc}") from exc
    return tally_packages(data)


def total_of(packages: Mapping[str, Tally]) -> Tally:
    return sum(packages.values(), Tally())


@dataclass(frozen=True)
class Verdict:
    name: str
    percent: float
    floor: float

    @property
    def passed(self) -> bool:
        return self.percent >= self.floor


def evaluate(
    packages: Mapping[str, Tally],
    *,
    total_floor: float = TOTAL_FLOOR,
    package_floor: float = PACKAGE_FLOOR,
) -> list[Verdict]:
    """One verdict per package, then the total (named ``TOTAL``)."""
    verdicts = [Verdict(name, tally.percent, package_floor) for name, tally in packages.items()]
    verdicts.append(Verdict(TOTAL_NAME, total_of(packages).percent, total_floor))
    return verdicts


def render_table(verdicts: Sequence[Verdict]) -> str:
    width = max([len("package"), *(len(v.name) for v in verdicts)])
    lines = [f"{'package':<{width}}  {'cover':>8}  {'floor':>8}  result"]
    for verdict in verdicts:
        lines.append(
            f"{verdict.name:<{width}}  {display(verdict.percent):>8}  "
            f"{display(verdict.floor):>8}  {'ok' if verdict.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def ratchet(packages: Mapping[str, Tally], baseline: Mapping[str, int]) -> list[str]:
    """Every package with more unrun lines and branches than its baseline."""
    return [
        f"{name}: {tally.unrun} unrun lines/branches, baseline {baseline.get(name, 0)}"
        for name, tally in packages.items()
        if tally.unrun > baseline.get(name, 0)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="coverage JSON report (`coverage json`)")
    parser.add_argument(
        "--total", type=float, default=TOTAL_FLOOR, help="floor for app/ as a whole (%%)"
    )
    parser.add_argument(
        "--package", type=float, default=PACKAGE_FLOOR, help="floor for every package (%%)"
    )
    parser.add_argument(
        "--ratchet", type=Path, help="coverage JSON of the deterministic stages, for the ratchet"
    )
    parser.add_argument("--baseline", type=Path, help="committed unrun counts per package")
    parser.add_argument(
        "--write-baseline", action="store_true", help="record --ratchet's counts as the baseline"
    )
    args = parser.parse_args(argv)
    if args.ratchet and args.baseline:
        try:
            steady = load_packages(args.ratchet)
        except CoverageDataError as exc:
            print(f"coverage gate: {exc}", file=sys.stderr)
            return 1
        counts = {name: tally.unrun for name, tally in steady.items()}
        if args.write_baseline:
            args.baseline.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
            print(f"coverage gate: baseline written to {args.baseline}")
            return 0
        try:
            baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"coverage gate: {args.baseline}: unreadable: {exc}", file=sys.stderr)
            return 1
        worse = ratchet(steady, baseline)
        if worse:
            print(
                "coverage ratchet FAILED (a covering test was removed, or new code is untested; "
                "if intended, rerun with --write-baseline):\n  " + "\n  ".join(worse),
                file=sys.stderr,
            )
            return 1
        print("coverage ratchet passed: no package has more unrun lines/branches than its baseline")
    try:
        packages = load_packages(args.report)
    except CoverageDataError as exc:
        print(f"coverage gate: {exc}", file=sys.stderr)
        return 1
    if not packages:
        print(f"coverage gate: {args.report}: no files under {SOURCE_ROOT}/", file=sys.stderr)
        return 1
    verdicts = evaluate(packages, total_floor=args.total, package_floor=args.package)
    print(render_table(verdicts))
    failed = [v for v in verdicts if not v.passed]
    if failed:
        print(
            "coverage gate FAILED: "
            + "; ".join(f"{v.name} {display(v.percent)} < {display(v.floor)}" for v in failed),
            file=sys.stderr,
        )
        return 1
    print(f"coverage gate passed (total >= {args.total:g}%, every package >= {args.package:g}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
