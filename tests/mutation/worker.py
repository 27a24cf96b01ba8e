"""The long-lived pytest session that runs mutants (ADR 0017): `-p tests.mutation.worker`.

One session, so PostgreSQL, Redis and the migrated template database start once. It replaces
pytest's test loop: first every collected test runs once on the unchanged code with coverage
switching context per test (the map from each line to the tests that reach it, and the check
that the tests pass without a mutant), unless a map is given; then, for each mutant of the
plan, the function it changes gets the mutated code object, the tests that reach the mutated
lines run fastest first until one fails (killed), and the code is put back. Each result is a
JSON line, written at once: the supervisor (`python -m tests.mutation`) restarts a session that
died or hung and goes on from the next mutant.
"""

from __future__ import annotations

import ast
import gc
import importlib
import json
import os
import signal
import sys
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import coverage
import pytest
from _pytest.runner import runtestprotocol

from tests.mutation.mutants import ROOT, Mutant, function_code, mutants_of

# A test quicker than this (in the clean run) is always among a mutant's tests.
QUICK = 0.1


class MutantTimeout(BaseException):
    pass


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mutation")
    group.addoption("--mutation-plan", help="JSON: the files and the mutant keys to run")
    group.addoption("--mutation-results", help="JSON lines: one result per mutant (appended)")
    group.addoption("--mutation-map", help="JSON: line -> tests; made here if missing")


class _SessionOnly:
    """A `nextitem` whose chain is the session alone: a test's teardown then finishes its
    function, class and module fixtures and keeps the session's (the services)."""

    def __init__(self, session: pytest.Session) -> None:
        self.session = session

    def listchain(self) -> list[Any]:
        return [self.session]


def _run(item: pytest.Item, nextitem: Any) -> bool:
    reports = runtestprotocol(item, log=False, nextitem=nextitem)
    return not any(report.failed for report in reports)


@contextmanager
def _deadline(seconds: float) -> Iterator[list[bool]]:
    """Interrupts the test past `seconds`; the list it gives holds True once it has. (pytest
    reports the interruption as the test's failure, so the flag is what tells them apart.)"""
    expired: list[bool] = []

    def expire(signum: int, frame: types.FrameType | None) -> None:
        expired.append(True)
        raise MutantTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield expired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _module_name(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".")


def _live_function(file: str, qualname: str) -> types.FunctionType:
    owner: Any = importlib.import_module(_module_name(file))
    *path, name = qualname.split(".")
    for part in path:
        owner = vars(owner)[part]
    function = vars(owner)[name]
    if isinstance(function, staticmethod | classmethod):
        function = function.__func__
    if not isinstance(function, types.FunctionType):
        raise LookupError(f"{file}::{qualname} is a {type(function).__name__}")
    return function


def _apply(mutant: Mutant) -> Callable[[], None]:
    """Give the live function the mutant's code; returns what puts the original back."""
    function = _live_function(mutant.file, mutant.function)
    code = function_code(compile(mutant.source, str(ROOT / mutant.file), "exec"), mutant.function)
    if code is None:
        raise LookupError(f"{mutant.key}: no code object for {mutant.function}")
    if code.co_freevars != function.__code__.co_freevars:
        return _replace_method(mutant, function, code)
    # The function, and every function object made earlier from a nested function or lambda
    # of it that the mutant changes (a callback stored at import, a key function): those run
    # their own copy of the code, which swapping the outer function's would not reach.
    swaps = [(function, function.__code__, code)]
    for old, new in _changed_nested(function.__code__, code):
        # A mutant that stops using a variable of the outer function (``spend(request, key)``
        # for ``spend(request, pick(quotas), key)``) has fewer free variables than the closures
        # made at import (a route's dependency) hold cells for: it is compiled to hold them all.
        # One that needs a cell they lack (adds a free variable) is left alone: only the outer
        # function's later calls make closures of it.
        fitted = (
            new
            if new.co_freevars == old.co_freevars
            else _fit_closure(mutant, new, old.co_freevars)
        )
        if fitted is not None:
            swaps += [
                (made, old, fitted)
                for made in gc.get_referrers(old)
                if isinstance(made, types.FunctionType) and made.__code__ is old
            ]
    done: list[tuple[types.FunctionType, types.CodeType]] = []

    def restore() -> None:
        for made, old in reversed(done):
            made.__code__ = old

    try:
        for made, old, new in swaps:
            # Raises ValueError when the closures differ (the mutant renamed a free variable).
            made.__code__ = new
            done.append((made, old))
    except ValueError:
        restore()
        raise
    return restore


def _fit_closure(
    mutant: Mutant, nested: types.CodeType, freevars: tuple[str, ...]
) -> types.CodeType | None:
    """The mutant's ``nested`` function compiled to hold the closure cells ``freevars`` (which
    its own free variables are some of), or None when it cannot (a free variable it adds, a
    lambda, which has no statement to hold the rest).

    Each variable it stopped using is named in an ``if False:`` at the start of its body: the
    compiler keeps it a free variable, in the same (sorted) place, and emits no code for it."""
    dropped = sorted(set(freevars) - set(nested.co_freevars))
    if not set(nested.co_freevars) <= set(freevars):
        return None
    tree = ast.parse(mutant.source)
    path = nested.co_qualname.replace(".<locals>", "").split(".")
    node: ast.AST = tree
    for name in path:
        found = [
            child
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and child.name == name
        ]
        if len(found) != 1:
            return None
        node = found[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    keep = ast.If(
        test=ast.Constant(False),
        body=[ast.Expr(ast.Tuple([ast.Name(name, ast.Load()) for name in dropped], ast.Load()))],
        orelse=[],
    )
    node.body.insert(0, ast.copy_location(keep, node.body[0]))
    ast.fix_missing_locations(tree)
    module = compile(tree, str(ROOT / mutant.file), "exec")
    fitted = function_code(module, nested.co_qualname)
    return fitted if fitted is not None and fitted.co_freevars == freevars else None


def _forget_apps(session: pytest.Session) -> None:
    """The harness starts an app made earlier again for equal settings (tests/harness/plugin.py,
    ``_running``): one made before a mutant was applied, or while it was, would not run the
    code it was made with (its middleware, quotas, OpenAPI document) as the code now is."""
    harness = session.config.pluginmanager.get_plugin("tests.harness.plugin")
    if harness is not None:
        harness.forget_apps()


def _replace_method(
    mutant: Mutant, function: types.FunctionType, code: types.CodeType
) -> Callable[[], None]:
    """A method whose mutant drops a free variable (``super()``'s ``__class__`` cell) cannot take
    the mutant's code in place: the class gets a new function made from it, with the cells it
    still uses, and gets the original back after. (Only methods: the class is where every call
    finds them; a bound method taken earlier keeps the original, which can only let a mutant
    survive.)"""
    *path, name = mutant.function.split(".")
    if not path:
        raise LookupError(f"{mutant.key}: its free variables differ from {mutant.function}'s")
    owner: Any = importlib.import_module(_module_name(mutant.file))
    for part in path:
        owner = vars(owner)[part]
    cells = dict(zip(function.__code__.co_freevars, function.__closure__ or (), strict=True))
    if not set(code.co_freevars) <= set(cells):
        raise LookupError(f"{mutant.key}: it adds a free variable to {mutant.function}")
    replacement = types.FunctionType(
        code,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        tuple(cells[free] for free in code.co_freevars),
    )
    replacement.__kwdefaults__ = function.__kwdefaults__
    replacement.__qualname__ = function.__qualname__
    original = vars(owner)[name]
    if isinstance(original, staticmethod | classmethod):
        setattr(owner, name, type(original)(replacement))
    else:
        setattr(owner, name, replacement)

    def restore() -> None:
        setattr(owner, name, original)

    return restore


def _changed_nested(
    old: types.CodeType, new: types.CodeType
) -> Iterator[tuple[types.CodeType, types.CodeType]]:
    before = [c for c in old.co_consts if isinstance(c, types.CodeType)]
    after = [c for c in new.co_consts if isinstance(c, types.CodeType)]
    if [c.co_qualname for c in before] != [c.co_qualname for c in after]:
        return  # the mutant adds or removes one (a lambda argument made None): none changed
    # A changed one is swapped whole (its own nested code comes with it).
    yield from ((b, a) for b, a in zip(before, after, strict=True) if b != a)


def _write(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _build_map(
    session: pytest.Session, items: list[pytest.Item], files: list[str]
) -> dict[str, Any]:
    keep = _SessionOnly(session)
    measure = coverage.Coverage(
        data_file=None,
        config_file=False,
        include=[str(ROOT / file) for file in files],
        concurrency=["greenlet", "thread"],
    )
    durations: dict[str, float] = {}
    failing: list[str] = []
    # The session's fixtures (the services, the migrated template) are set up before measuring:
    # their lines run once per session, so no test's run under a mutant would run them again.
    if items:
        _run(items[0], keep)
    measure.start()
    try:
        for index, item in enumerate(items):
            measure.switch_context(item.nodeid)
            started = time.perf_counter()
            following = items[index + 1] if index + 1 < len(items) else keep
            if _run(item, following):
                durations[item.nodeid] = time.perf_counter() - started
            else:
                failing.append(item.nodeid)
            if index % 100 == 99:
                print(f"mutation map: {index + 1} of {len(items)} tests", file=sys.stderr)
    finally:
        measure.stop()
    data = measure.get_data()
    lines: dict[str, dict[str, list[str]]] = {}
    for file in files:
        by_line = data.contexts_by_lineno(str(ROOT / file))
        lines[file] = {
            str(line): sorted(c for c in contexts if c in durations)
            for line, contexts in by_line.items()
        }
    return {"durations": durations, "failing": failing, "lines": lines}


def in_stages(test: str, stages: list[str]) -> bool:
    """Whether the test (a node id) is in one of the stages (directories or files)."""
    path = test.split("::")[0]
    return any(path == stage or path.startswith(stage.rstrip("/") + "/") for stage in stages)


def _tests_for(
    mutant: Mutant,
    found: dict[str, Any],
    max_tests: int,
    max_seconds: float,
    stages: list[str] | None = None,
    aimed: frozenset[str] = frozenset(),
) -> list[str]:
    """The tests that reach the mutant's lines, up to `max_seconds` of their clean run: first
    those ``aimed`` at its function (marked ``mutation_targets``: written to hold it), then
    every quick one (under QUICK seconds: unit tests, the focused ones), fastest first; then of
    the others at most `max_tests`, each test module's fastest before any module's second (a
    line that every request runs is reached by most of the suite, and a mutant there that
    survives would otherwise run all of it). With `stages`, only the tests in them (the
    mutant's package's, when the session runs several packages')."""
    by_line = found["lines"].get(mutant.file, {})
    durations = found["durations"]
    reaching = {
        test
        for line in mutant.lines()
        for test in by_line.get(str(line), [])
        if stages is None or in_stages(test, stages)
    }
    ordered = sorted(reaching, key=lambda test: (durations.get(test, 0.0), test))
    first = [test for test in ordered if test in aimed]
    quick = [test for test in ordered if durations.get(test, 0.0) < QUICK and test not in aimed]
    by_module: dict[str, list[str]] = {}
    for test in ordered:
        if durations.get(test, 0.0) >= QUICK and test not in aimed:
            by_module.setdefault(test.split("::")[0], []).append(test)
    rounds = [
        sorted(
            (tests[index] for tests in by_module.values() if index < len(tests)),
            key=lambda test: (durations.get(test, 0.0), test),
        )
        for index in range(max((len(tests) for tests in by_module.values()), default=0))
    ]
    chosen: list[str] = []
    spent = 0.0
    for test in first + quick + [test for round_ in rounds for test in round_][:max_tests]:
        if chosen and spent + durations[test] > max_seconds and test not in aimed:
            break
        chosen.append(test)
        spent += durations[test]
    return chosen


@pytest.hookimpl
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    config = session.config
    plan_option = config.getoption("--mutation-plan")
    if not plan_option:
        return None
    plan = json.loads(Path(plan_option).read_text())
    results = Path(config.getoption("--mutation-results"))
    map_path = Path(config.getoption("--mutation-map"))
    items = {item.nodeid: item for item in session.items}
    aimed: dict[str, set[str]] = {}
    for item in session.items:
        for marker in item.iter_markers("mutation_targets"):
            for function in marker.args:
                aimed.setdefault(function, set()).add(item.nodeid)
    keep = _SessionOnly(session)

    if map_path.exists():
        found = json.loads(map_path.read_text())
    else:
        found = _build_map(session, list(session.items), plan["map_files"])
        found["stages"] = sorted({s for stages in plan.get("stages", {}).values() for s in stages})
        map_path.write_text(json.dumps(found))

    done: set[str] = set()
    if results.exists():
        latest = {
            record["key"]: record["status"]
            for record in map(json.loads, filter(None, results.read_text().splitlines()))
        }
        done = {key for key, status in latest.items() if status not in ("retry", "started")}
    wanted = set(plan["mutants"])
    mutants = [
        mutant
        for file in plan["files"]
        for mutant in mutants_of(file)
        if mutant.key in wanted and mutant.key not in done
    ]
    retried = set(plan.get("retried", []))
    for mutant in mutants:
        tests = [
            test
            for test in _tests_for(
                mutant,
                found,
                plan["max_tests"],
                plan["max_seconds"],
                plan.get("stages", {}).get(mutant.package),
                frozenset(aimed.get(f"{mutant.file}::{mutant.function}", ())),
            )
            if test in items
        ]
        record: dict[str, Any] = {"key": mutant.key, "tests": len(tests), "ran": 0}
        if not tests:
            _write(results, record | {"status": "survived", "reason": "no test reaches it"})
            continue
        # Marked before it is applied: if the session stops answering with it (a hang no
        # deadline interrupts), the supervisor judges this one timed out (__main__.settle).
        _write(results, {"key": mutant.key, "status": "started"})
        try:
            restore = _apply(mutant)
        except (LookupError, ValueError) as error:
            _write(results, record | {"status": "skipped", "reason": str(error)})
            continue
        _forget_apps(session)
        status, killer = "survived", None
        started = time.perf_counter()
        try:
            for index, test in enumerate(tests):
                record["ran"] = index + 1
                following = items[tests[index + 1]] if index + 1 < len(tests) else keep
                # Generous: a test that merely ran slower on a busy machine must not count as
                # a mutant detected.
                with _deadline(10.0 + 5 * found["durations"][test]) as expired:
                    passed = _run(items[test], following)
                if expired:
                    raise MutantTimeout
                if not passed:
                    status, killer = "killed", test
                    break
        except MutantTimeout:
            status = "timeout"
        finally:
            restore()
            _forget_apps(session)
        record |= {"status": status, "by": killer, "seconds": time.perf_counter() - started}
        if status == "timeout":
            # The event loop may still hold the interrupted test's tasks: the remaining
            # mutants get a new session.
            _write(results, record)
            break
        session._setupstate.teardown_exact(keep)  # type: ignore[arg-type]
        if killer is not None and mutant.key not in retried and not _run(items[killer], keep):
            # The test fails on the original code too: the mutant left the session broken
            # (shared state), so its verdict is unproven. It runs again in a new session.
            _write(results, {"key": mutant.key, "status": "retry"})
            break
        _write(results, record)
    return True
