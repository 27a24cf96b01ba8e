"""The mutation stage's own machinery (run first by `tox -e mutation`): keys that survive
unrelated edits, a code swap that every caller sees and that is undone, and the score."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Enum

from app.auth.deps import per_user
from app.billing.models import BillingAccount
from app.db.faults import DatabaseUnavailable
from app.kit import text
from app.kit.bodies import BodyLimits
from app.kit.problems import InvalidInput
from tests.harness import plugin as harness
from tests.mutation import __main__ as stage
from tests.mutation.mutants import ROOT, Mutant, mutants_of
from tests.mutation.worker import _apply, _forget_apps, _tests_for, in_stages

FILE = "app/kit/text.py"


def test_keys_survive_an_edit_elsewhere_in_the_file() -> None:
    code = (ROOT / FILE).read_text()
    before = mutants_of(FILE, code)
    after = mutants_of(FILE, "# a comment\n\n" + code)
    assert before
    assert [m.key for m in after] == [m.key for m in before]
    assert [m.line for m in after] == [m.line + 2 for m in before]
    assert len({m.key for m in before}) == len(before)


def test_a_mutant_changes_the_live_function_and_is_put_back() -> None:
    # `"\x00" in text` -> `"XX\x00XX" in text`: a NUL alone is then storable.
    (mutant,) = [m for m in mutants_of(FILE) if '+    if "XX\\x00XX" in text:' in m.diff]
    storable = text.storable  # a reference taken before, as FastAPI and importers hold one
    assert storable("a\x00b") is False
    restore = _apply(mutant)
    try:
        assert storable("a\x00b") is True
        assert text.unstorable_at({"k": "a\x00b"}) is None  # its callers see it too
    finally:
        restore()
    assert storable("a\x00b") is False
    assert text.unstorable_at({"k": "a\x00b"}) == ["k"]


def test_an_app_made_before_a_mutant_is_not_started_again(request: pytest.FixtureRequest) -> None:
    """The harness keeps apps for equal settings; a mutant in the code that makes an app (its
    middleware, quotas) would not run in one made before it was applied."""
    harness._APPS.append(FastAPI())
    _forget_apps(request.session)
    assert harness._APPS == []


def _mutant(key: str, package: str = "app/kit") -> Mutant:
    return Mutant(key, package, f"{package}/x.py", 3, 3, "f", f"diff {key}", "")


def test_the_score_counts_timeouts_as_detected_and_leaves_equivalents_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = [_mutant(k) for k in ("a", "b", "c", "d", "e")]
    results = {
        "a": {"status": "killed"},
        "b": {"status": "timeout"},
        "c": {"status": "survived"},
        "d": {"status": "survived"},
        "e": {"status": "survived", "reason": "no test reaches it"},
    }
    monkeypatch.setattr(stage, "equivalents", lambda: {"d": "the same for every input"})
    report = stage.summarise(chosen, results, ["app/kit", "app/db"], "full", 1.0)
    assert report["packages"]["app/kit"] == {
        "killed": 1,
        "survived": 2,
        "timeout": 1,
        "equivalent": 1,
        "score": 50.0,
    }
    assert report["packages"]["app/db"]["score"] == 100.0
    assert [(s["file"], s["line"], s["diff"]) for s in report["survivors"]] == [
        ("app/kit/x.py", 3, "diff c"),
        ("app/kit/x.py", 3, "diff e"),
    ]
    assert stage.gate(report, chosen, results, 80.0) == 1
    assert stage.gate(report, chosen, results, 50.0) == 0
    assert Counter(s["package"] for s in report["survivors"]) == {"app/kit": 2}


def test_the_reviewed_equivalents_parse_each_key_once_with_its_reason() -> None:
    # tomllib refuses a key given twice: a duplicate would stop the nightly stage at its end.
    found = stage.equivalents()
    assert len(found) > 100
    for key, reason in found.items():
        assert re.fullmatch(r"app/[\w/]+\.py::[\w.]+::[0-9a-f]{12}(\.\d+)?", key), key
        assert len(reason) > 20, key


def test_a_mutant_its_session_hung_on_is_judged_timed_out_and_the_rest_left_pending(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.jsonl"
    lines = [
        {"key": "a", "status": "started"},
        {"key": "a", "status": "killed"},
        {"key": "b", "status": "started"},  # the session stopped answering here
    ]
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))

    assert stage.settle(results) == ["b"]
    assert stage.settle(results) == []  # settled once

    latest = stage.results_of(results)
    assert {key: record["status"] for key, record in latest.items()} == {
        "a": "killed",
        "b": "timeout",
    }
    assert latest["b"]["reason"] == stage.STUCK


def test_a_lambda_made_before_the_mutant_runs_the_mutant() -> None:
    # pg_enum's key function is made once, when the models are defined; SQLAlchemy calls it
    # each time it adapts the type. Swapping pg_enum's own code would not reach it.
    (mutant,) = [m for m in mutants_of("app/db/base.py") if "lambda members: None" in m.diff]
    status = BillingAccount.__table__.c.status.type
    assert isinstance(status, Enum)
    assert _adapted(status)[0] == "trialing"
    restore = _apply(mutant)
    try:
        with pytest.raises(TypeError):
            _adapted(status)
    finally:
        restore()
    assert _adapted(status)[0] == "trialing"


async def test_a_mutant_that_drops_a_closures_variable_applies_over_a_stale_closure() -> None:
    """A closure from an earlier call (here a route kept its ``receive``) has one cell more than
    the mutant's code wants: the mutant still applies, and the next call runs it."""
    (mutant,) = [
        m
        for m in mutants_of("app/kit/bodies.py")
        if m.function == "BodyLimits._streamed" and "+                    refusal = None" in m.diff
    ]
    kept: list[Any] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        kept.append(receive)
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def status() -> int:
        chunks = [{"type": "http.request", "body": b"x" * 8, "more_body": True}] * 3
        sent: list[Any] = []

        async def receive() -> Any:
            return chunks.pop() if chunks else {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await BodyLimits(route, max_bytes=10, max_json_depth=8, read_timeout=5)(
            scope, receive, send
        )
        return int(sent[0]["status"]) if sent else 0

    assert await status() == 413
    assert kept  # the stale closure
    restore = _apply(mutant)
    try:
        assert await status() == 0  # the mutant: the refusal is lost, and the answer too
    finally:
        restore()
    assert await status() == 413


async def test_a_mutant_that_drops_a_variable_applies_to_the_closures_made_at_import() -> None:
    """A route's dependency is a closure made once, when its module is imported (``per_user``'s
    ``spend_per_user`` holds ``pick``): a mutant that stops using ``pick`` has one free variable
    fewer than that closure has cells, and must still be what the closure runs."""
    (mutant,) = [
        m
        for m in mutants_of("app/auth/deps.py")
        if m.function == "per_user"
        and "+        await spend(request, str(caller.user_id))" in m.diff
    ]
    spend_per_user = per_user(lambda quotas: quotas.token_create)
    caller = SimpleNamespace(user_id="u")
    with pytest.raises(AttributeError):  # pick(quotas) on no quotas: the original's first step
        await spend_per_user(None, caller, None)  # type: ignore[arg-type]
    restore = _apply(mutant)
    try:
        with pytest.raises(TypeError, match="key"):  # spend() without its key: the mutant's
            await spend_per_user(None, caller, None)  # type: ignore[arg-type]
    finally:
        restore()
    with pytest.raises(AttributeError):
        await spend_per_user(None, caller, None)  # type: ignore[arg-type]


def test_a_mutant_that_drops_super_applies_to_the_method_of_the_class() -> None:
    """Without ``super()`` the method's code has no ``__class__`` cell, so it cannot be swapped
    in place: the class gets a function made from it, and the original back after."""
    (mutant,) = [
        m
        for m in mutants_of("app/kit/problems.py")
        if m.function == "InvalidInput.body" and "+        body = None" in m.diff
    ]
    original = InvalidInput.body
    assert InvalidInput("x").body().detail == "x"
    restore = _apply(mutant)
    try:
        with pytest.raises(AttributeError):
            InvalidInput("x").body()
    finally:
        restore()
    assert InvalidInput.body is original
    assert InvalidInput("x").body().detail == "x"


def _adapted(enum: Enum) -> list[str]:
    return list(enum.adapt(Enum).enums)  # type: ignore[no-untyped-call]


def test_sql_whose_case_changes_outside_its_quotes_is_settled_as_equivalent() -> None:
    settled = {
        line.strip(): m.equivalent
        for m in mutants_of("app/db/tenancy.py")
        for line in m.diff.splitlines()
        if line.startswith("+ ") and ("set_config" in line.lower() or "vetify_enter" in line)
    }
    assert settled[
        """+    await session.execute(text("select set_config('app.user_id', :id, true)"), {"id": str(user_id)})"""  # noqa: E501
    ]
    assert settled[
        """+            text("select clinic_epoch, user_epoch from vetify_enter(:clinic, :user)"),"""  # noqa: E501
    ]
    # The setting's name is quoted: its case is the setting; a bind parameter's name is ours.
    assert not settled[
        """+    await session.execute(text("SELECT SET_CONFIG('APP.USER_ID', :ID, TRUE)"), {"id": str(user_id)})"""  # noqa: E501
    ]


def test_a_node_on_a_continuation_line_is_reached_by_the_tests_of_its_statement() -> None:
    # The detail's second part is one constant with its first: Python reports no line event
    # on the part's own line, so the map's tests for it are those of the statement.
    (mutant,) = [m for m in mutants_of("app/db/faults.py") if '+            "XX Retry' in m.diff]
    run = {line for _, _, line in DatabaseUnavailable.__init__.__code__.co_lines()}
    assert mutant.line not in run
    assert run.intersection(mutant.lines())


def test_each_package_runs_its_own_stages_and_stage_replaces_them_all() -> None:
    own = stage.stages_of(["app/billing", "app/db"], None)
    assert own["app/db"] == ["tests/unit", "tests/integration"]
    assert "tests/contract/stripe" in own["app/billing"]
    assert "tests/security/test_rate_limits.py" in own["app/billing"]
    assert "tests/security" not in own["app/billing"]  # files named one by one: it takes minutes
    assert stage.stages_of(["app/billing", "app/db"], ["tests/unit"]) == {
        "app/billing": ["tests/unit"],
        "app/db": ["tests/unit"],
    }


def test_a_mutant_runs_only_the_tests_of_its_packages_stages() -> None:
    """One session runs every chosen package's stages; an app/db mutant reached by a Stripe
    contract test (there for billing) is not run against it."""
    mutant = Mutant("k", "app/db", "app/db/x.py", 3, 3, "f", "diff", "")
    reaching = [
        "tests/unit/test_a.py::test_a",
        "tests/contract/stripe/test_events.py::test_b",
        "tests/security/test_rate_limits.py::test_c",
        "tests/security/test_rate_limits_more.py::test_d",
    ]
    found = {"lines": {"app/db/x.py": {"3": reaching}}, "durations": dict.fromkeys(reaching, 0.01)}
    billing = stage.stages_of(["app/billing"], None)["app/billing"]
    db = stage.stages_of(["app/db"], None)["app/db"]
    assert _tests_for(mutant, found, 40, 30.0, db) == ["tests/unit/test_a.py::test_a"]
    assert sorted(_tests_for(mutant, found, 40, 30.0, billing)) == sorted(reaching[:3])
    assert _tests_for(mutant, found, 40, 30.0) == sorted(reaching)
    assert in_stages("tests/security/test_rate_limits.py::test_c", ["tests/security/"])


def test_a_test_aimed_at_a_function_runs_first_on_its_mutants_whatever_the_cap() -> None:
    """A line every request runs is reached by hundreds of slow tests; the cap takes a few.
    The test written for that function (``mutation_targets``) runs first, even past the cap
    and the time budget; one that does not reach the mutant's lines still does not run."""
    mutant = Mutant("k", "app/auth", "app/auth/x.py", 3, 3, "f", "diff", "")
    slow = [f"tests/security/test_m{n}.py::test_{n}" for n in range(6)]
    aimed = "tests/security/test_m5.py::test_5"
    found = {
        "lines": {"app/auth/x.py": {"3": slow}},
        "durations": {test: 2.0 + n for n, test in enumerate(slow)},
    }
    assert aimed not in _tests_for(mutant, found, 2, 30.0)
    assert _tests_for(mutant, found, 2, 3.0, aimed=frozenset({aimed})) == [aimed]  # 7 s
    # Then the cap's own choice, within the time left.
    assert _tests_for(mutant, found, 2, 10.0, aimed=frozenset({aimed})) == [aimed, slow[0]]
    elsewhere = "tests/security/test_other.py::test_x"
    assert _tests_for(mutant, found, 2, 30.0, aimed=frozenset({elsewhere}))[0] == slow[0]
