"""Mutation testing of the modules where a missed bug is a breach or lost money (ADR 0017).

    python -m tests.mutation [--mode full|pr|sample] [--package app/db ...] [--base REF]

Makes the mutants of app/db, app/auth, app/billing and app/kit with mutmut's operators, runs
them in one long-lived pytest session (tests/mutation/worker.py), each against only the tests
that reach its lines, and writes reports/mutation.json. Fails when a package's score (killed
and timed out over all but the equivalent) is under 80%, or a mutant could not be run.

Modes: `full` every mutant; `pr` those on the lines changed since the merge base with the base
branch (origin/main by default); `sample` a fixed, seeded sample per package (what
VETIFY_SUITE_LENGTH=smoke runs: the gate then stands on the sample, whose size is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import coverage

from tests.mutation.mutants import ROOT, Mutant, mutants_of

PACKAGES = ("app/db", "app/auth", "app/billing", "app/kit")
# Files of those packages not mutated, each with its reason.
EXCLUDED = {
    "app/db/embedded.py": "starts the development and test PostgreSQL itself: runs in the test "
    "session's set-up and in `vetify` subprocesses, never inside a test",
}
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.toml"
# The test stages each package's mutants run against (`--stage` replaces them for every
# package): the in-process stages, and for billing the Stripe webhook contract suite (the only
# one that sends unsigned, stale and malformed deliveries) and the two security files that reach
# billing (a plan's quota, concurrent deliveries of one event). The whole security stage takes
# minutes and mostly repeats what the integration tests reach, so files are named one by one.
IN_PROCESS = ("tests/unit", "tests/integration")
STAGES: dict[str, tuple[str, ...]] = {
    "app/db": IN_PROCESS,
    "app/auth": (
        *IN_PROCESS,
        # Where the security stage asserts what auth decides: CSRF, credentials, MFA and
        # step-up, throttled log-ins, per-caller quotas (app.auth.deps spends them).
        "tests/security/test_authentication.py",
        "tests/security/test_csrf.py",
        "tests/security/test_mfa.py",
        "tests/security/test_step_up.py",
        "tests/security/test_login_throttling.py",
        "tests/security/test_rate_limits.py",
        "tests/security/test_tenant_credentials.py",
    ),
    "app/billing": (
        *IN_PROCESS,
        "tests/contract/stripe",
        "tests/security/test_rate_limits.py",
        "tests/security/test_concurrency.py",
    ),
    "app/kit": IN_PROCESS,
}
# A session that writes no result for this long is stopped (each test has its own deadline
# inside the session; this catches a session stuck outside one).
STALLED_SECONDS = 900.0


def files_of(packages: list[str]) -> list[str]:
    return [
        str(path.relative_to(ROOT))
        for package in packages
        for path in sorted((ROOT / package).glob("*.py"))
        if str(path.relative_to(ROOT)) not in EXCLUDED
    ]


def stages_of(packages: list[str], override: list[str] | None) -> dict[str, list[str]]:
    """Each package's stages: its own, or `--stage`'s for all of them."""
    return {package: list(override or STAGES[package]) for package in packages}


def changed_lines(base: str) -> dict[str, set[int]]:
    """Lines added or changed since the merge base of HEAD and `base` (the working tree's
    uncommitted changes included)."""
    merge_base = subprocess.run(  # noqa: S603 - git with fixed arguments
        ["git", "merge-base", base, "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    diff = subprocess.run(  # noqa: S603
        ["git", "diff", "--unified=0", "--no-color", merge_base, "--", "app"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changed: dict[str, set[int]] = defaultdict(set)
    file = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            file = line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("@@") and file is not None:
            hunk = re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
            assert hunk is not None
            start, count = int(hunk[1]), int(hunk[2] or "1")
            changed[file].update(range(start, start + count))
    return changed


def select(mutants: list[Mutant], args: argparse.Namespace) -> list[Mutant]:
    if args.mode == "full":
        return mutants
    if args.mode == "pr":
        changed = changed_lines(args.base)
        return [m for m in mutants if changed.get(m.file, set()).intersection(m.lines())]
    by_package: dict[str, list[Mutant]] = defaultdict(list)
    for mutant in mutants:
        by_package[mutant.package].append(mutant)
    chosen: list[Mutant] = []
    for package in sorted(by_package):
        pool = sorted(by_package[package], key=lambda m: m.key)
        chosen += random.Random(f"{args.seed}:{package}").sample(pool, min(args.sample, len(pool)))
    return chosen


def _retries(path: Path, key: str) -> int:
    return sum(
        1
        for line in path.read_text().splitlines()
        if line and json.loads(line) == {"key": key, "status": "retry"}
    )


def results_of(path: Path) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line:
                record = json.loads(line)
                latest[record["key"]] = record
    return latest


STUCK = "the pytest session stopped answering with it applied (no deadline interrupted it)"


def settle(path: Path) -> list[str]:
    """After a session ends: a mutant it started and never judged (the session hung or died
    with it applied) is judged timed out, as a test past its deadline is; its keys."""
    hung = [key for key, record in results_of(path).items() if record["status"] == "started"]
    with path.open("a") as out:
        for key in hung:
            out.write(json.dumps({"key": key, "status": "timeout", "reason": STUCK}) + "\n")
    return hung


def run_sessions(
    files: list[str],
    keys: list[str],
    work: Path,
    stages: dict[str, list[str]],
    limits: tuple[int, float],
) -> dict[str, dict[str, Any]]:
    """Runs the mutants `keys` of `files` (and maps every target file) in a session over every
    package's stages; a mutant runs only the tests of its own package's."""
    results_path, map_path, plan_path = (
        work / "results.jsonl",
        work / "map.json",
        work / "plan.json",
    )
    every_stage = sorted({stage for found in stages.values() for stage in found})
    if map_path.exists() and json.loads(map_path.read_text()).get("stages", every_stage) != (
        every_stage
    ):
        print("mutation: the kept map is of other stages; making it again", flush=True)
        map_path.unlink()
    retried: set[str] = set()
    while True:
        results = results_of(results_path)
        # "started" with no verdict: a run stopped from outside (a new one tries it again).
        pending = [
            k for k in keys if results.get(k, {}).get("status") in (None, "retry", "started")
        ]
        if not pending:
            return results
        again = {k for k in pending if results.get(k, {}).get("status") == "retry"}
        twice = sorted(k for k in again if _retries(results_path, k) > 1)
        if twice:
            raise SystemExit(f"a mutant broke a new session twice: {twice}")
        retried |= again
        plan_path.write_text(
            json.dumps(
                {
                    "map_files": files_of(list(PACKAGES)),
                    "files": files,
                    "mutants": pending,
                    "retried": sorted(retried),
                    "stages": stages,
                    "max_tests": limits[0],
                    "max_seconds": limits[1],
                }
            )
        )
        lines_before = len(results_path.read_text().splitlines()) if results_path.exists() else 0
        log = work / "session.log"
        print(f"mutation: a pytest session for {len(pending)} mutants (log: {log})", flush=True)
        command = [
            sys.executable, "-m", "pytest", *every_stage, "-p", "tests.mutation.worker",
            "-p", "no:randomly", "-p", "no:cacheprovider", "-q",
            f"--mutation-plan={plan_path}", f"--mutation-results={results_path}",
            f"--mutation-map={map_path}",
        ]  # fmt: skip
        with log.open("a") as out:
            session = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                _watch(session, results_path, map_path)
            finally:
                if session.poll() is None:
                    _stop(session)
        for key in settle(results_path):
            print(f"mutation: {key} hung its session: judged timed out", flush=True)
        written = len(results_path.read_text().splitlines()) if results_path.exists() else 0
        if written == lines_before:
            raise SystemExit(f"the session ran no mutant (exit {session.returncode}): see {log}")
        if not Path(map_path).exists():
            raise SystemExit(f"the mutation session made no coverage map: see {log}")


def _watch(session: subprocess.Popen[bytes], results: Path, map_path: Path) -> None:
    seen, last = 0, time.monotonic()
    while session.poll() is None:
        time.sleep(2)
        count = len(results.read_text().splitlines()) if results.exists() else 0
        if count != seen:
            seen, last = count, time.monotonic()
            print(f"mutation: {count} results", flush=True)
        elif map_path.exists() and time.monotonic() - last > STALLED_SECONDS:
            print("mutation: the session is stuck; stopping it", flush=True)
            _stop(session)


def _stop(session: subprocess.Popen[bytes]) -> None:
    """SIGINT first: pytest then tears its session fixtures down (PostgreSQL, Redis)."""
    session.send_signal(signal.SIGINT)
    try:
        session.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(session.pid, signal.SIGKILL)
        session.wait()


def map_from(data_files: list[Path], files: list[str], out: Path) -> None:
    """The line -> tests map from coverage data recorded with per-test contexts (pytest-cov's
    `--cov-context=test`, whose contexts are `<node id>|setup|run|teardown`)."""
    lines: dict[str, dict[str, set[str]]] = {file: defaultdict(set) for file in files}
    for data_file in data_files:
        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        if len(data.measured_contexts()) < 2:
            raise SystemExit(f"{data_file} has no per-test contexts (--cov-context=test)")
        for file in files:
            for line, contexts in data.contexts_by_lineno(str(ROOT / file)).items():
                lines[file][str(line)].update(c.rpartition("|")[0] for c in contexts if "|" in c)
    tests = {test for by_line in lines.values() for found in by_line.values() for test in found}
    # No durations in coverage data: every test is taken to take a second (the deadline).
    out.write_text(
        json.dumps(
            {
                "durations": dict.fromkeys(sorted(tests), 1.0),
                "failing": [],
                "lines": {
                    file: {line: sorted(found) for line, found in by_line.items()}
                    for file, by_line in lines.items()
                },
            }
        )
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # A stopped run (tox's timeout, CI's cancel) stops its pytest session cleanly too.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    smoke = os.environ.get("VETIFY_SUITE_LENGTH", "full") == "smoke"
    parser.add_argument("--mode", choices=("full", "pr", "sample"))
    parser.add_argument("--package", action="append", choices=PACKAGES)
    parser.add_argument("--sample", type=int, default=12, help="mutants per package (sample)")
    parser.add_argument("--seed", default="17")
    parser.add_argument("--base", default="origin/main", help="pr mode: the base branch")
    parser.add_argument(
        "--stage",
        action="append",
        help="test directories or files, for every package (default: each package's, STAGES)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "mutation")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "mutation.json")
    parser.add_argument("--fail-under", type=float, default=80.0)
    parser.add_argument(
        "--max-tests", type=int, default=40, help="tests per mutant at most (spread over modules)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="clean-run seconds per mutant at most"
    )
    parser.add_argument("--keep", action="store_true", help="reuse --work's map and results")
    parser.add_argument(
        "--map-from",
        type=Path,
        nargs="+",
        help="coverage data files with per-test contexts to take the map from (no map run)",
    )
    args = parser.parse_args(argv)
    args.mode = args.mode or ("sample" if smoke else "full")
    args.work = args.work.resolve()
    started = time.monotonic()

    packages = args.package or list(PACKAGES)
    files = files_of(packages)
    mutants = [m for file in files for m in mutants_of(file)]
    chosen = select(mutants, args)
    print(
        f"mutation: {args.mode} mode, {len(chosen)} of {len(mutants)} mutants in {len(files)} "
        f"files of {', '.join(packages)}",
        flush=True,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.keep:
        for name in ("results.jsonl", "map.json", "session.log"):
            (args.work / name).unlink(missing_ok=True)
    if args.map_from:
        map_from(args.map_from, files_of(list(PACKAGES)), args.work / "map.json")
    results: dict[str, dict[str, Any]] = {
        m.key: {"key": m.key, "status": "equivalent", "reason": m.equivalent}
        for m in chosen
        if m.equivalent
    }
    to_run = [m for m in chosen if not m.equivalent]
    if to_run:
        used = sorted({m.file for m in to_run})
        results |= run_sessions(
            used,
            [m.key for m in to_run],
            args.work,
            stages_of(sorted({m.package for m in to_run}), args.stage),
            (args.max_tests, args.max_seconds),
        )
    report = summarise(chosen, results, packages, args.mode, time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return gate(report, chosen, results, args.fail_under)


def equivalents() -> dict[str, str]:
    if not EQUIVALENT.exists():
        return {}
    table = tomllib.loads(EQUIVALENT.read_text())
    return {key: str(reason) for key, reason in table.get("equivalent", {}).items()}


def summarise(
    chosen: list[Mutant],
    results: dict[str, dict[str, Any]],
    packages: list[str],
    mode: str,
    seconds: float,
) -> dict[str, Any]:
    known = equivalents()
    counts: dict[str, Counter[str]] = {package: Counter() for package in packages}
    survivors = []
    for mutant in chosen:
        status = results[mutant.key]["status"]
        if status == "survived" and mutant.equivalent:
            status = "equivalent"
        if status == "survived" and mutant.key in known:
            status = "equivalent"
        counts[mutant.package][status] += 1
        if status == "survived":
            survivors.append(
                {
                    "package": mutant.package,
                    "file": mutant.file,
                    "line": mutant.line,
                    "diff": mutant.diff,
                    "key": mutant.key,
                    "reason": results[mutant.key].get("reason", ""),
                }
            )
    return {
        "score": _score(sum(counts.values(), Counter())),
        "packages": {
            package: {
                "killed": count["killed"],
                "survived": count["survived"],
                "timeout": count["timeout"],
                "equivalent": count["equivalent"],
                "score": _score(count),
            }
            for package, count in counts.items()
        },
        "survivors": survivors,
        "seconds": round(seconds, 1),
        "mode": mode,
    }


def _score(count: Counter[str]) -> float:
    detected = count["killed"] + count["timeout"]
    judged = detected + count["survived"]
    return round(100.0 * detected / judged, 1) if judged else 100.0


def gate(
    report: dict[str, Any],
    chosen: list[Mutant],
    results: dict[str, dict[str, Any]],
    fail_under: float,
) -> int:
    failed = False
    for package, numbers in report["packages"].items():
        judged = numbers["killed"] + numbers["timeout"] + numbers["survived"]
        verdict = "ok" if numbers["score"] >= fail_under else "FAIL"
        failed |= verdict == "FAIL"
        print(
            f"mutation: {package}: {numbers['score']}% of {judged} mutants "
            f"({numbers['killed']} killed, {numbers['timeout']} timed out, "
            f"{numbers['survived']} survived, {numbers['equivalent']} equivalent) {verdict}"
        )
    skipped = [m.key for m in chosen if results[m.key]["status"] == "skipped"]
    for key in skipped:
        print(f"mutation: could not run {key}: {results[key]['reason']}")
    for survivor in report["survivors"]:
        print(f"\nsurvived: {survivor['key']} {survivor['reason']}\n{survivor['diff']}")
    print(
        f"mutation: {report['mode']} mode, {len(chosen)} mutants, score {report['score']}% "
        f"(gate {fail_under}% per package), {report['seconds']} s"
    )
    return 1 if failed or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
