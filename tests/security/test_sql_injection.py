"""SQL injection through every string parameter of every route: query parameters, path
parameters and each string field of each request body (nested ones included).

Routes, parameters and fields come from the route table and the OpenAPI document
(tests/security/catalogue.py, bodies.py). Each payload goes, alone, into one place of an
otherwise valid request, as a clinic's owner (so the request gets past authentication to the
query). For every answer: no 5xx, no database error text, nothing of another clinic, and the
payload never in the text of a statement (only ever a bound parameter); boolean-blind pairs
answer alike; ``pg_sleep`` adds no delay over the same request with ``pg_sleep(0)``; the row
counts change only by what the plain valid request changes. A path parameter typed as a UUID
refuses every payload before any statement carries it. A payload in free text is stored
exactly as sent.

Every place gets every payload family on every run; a pull request sends a few members of each
family per place, chosen by the place (tests/harness/sweep.py), the nightly run all of them
(``VETIFY_SWEEP=full``).
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contract.snapshot import offline_app
from tests.harness import sweep, tally
from tests.harness.api import shared_part
from tests.harness.statements import recording
from tests.harness.world import World
from tests.security.bodies import (
    CONSUMED,
    WITH_BODY,
    Field,
    body_fields,
    nested_example,
    ready,
    valid_body,
    with_value,
)
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    Credentials,
    Route,
    credentials,
    explain,
    problem,
    send,
)
from tests.security.estate import Estate, fresh, furnish, ids_of
from tests.security.surface import (
    census,
    horizon,
    outside_the_trail,
    resolve,
    stored_as_given,
    types,
)

TAUTOLOGIES = [
    "' OR '1'='1",
    "' OR '1'='1' --",
    "' OR 1=1 --",
    '" OR ""="',
    "1 OR 1=1",
    "') OR ('1'='1",
    "%' OR '%'='",
]
STACKED = [
    "'; DROP TABLE pets; --",
    "'); DROP TABLE customers; --",
    "1; DELETE FROM appointments; --",
    "'; UPDATE memberships SET role = 'owner'; --",
    "'; TRUNCATE credentials CASCADE; --",
]
UNION_AND_ERRORS = [
    "' UNION SELECT NULL, version() --",
    "' UNION SELECT id, secret_hash FROM credentials --",
    "' AND 1=CAST((SELECT version()) AS int) --",
    "'\"`;\\",
]
# (true, false): an injectable parameter answers the two differently.
BOOLEAN_BLIND = [
    ("x' AND '1'='1", "x' AND '1'='2"),
    ("x' OR '1'='1' --", "x' OR '1'='2' --"),
    ("1 AND 1=1", "1 AND 1=2"),
]
SLEEP_SECONDS = 3
TIME_BASED = [
    f"'; SELECT pg_sleep({SLEEP_SECONDS}); --",
    f"' || pg_sleep({SLEEP_SECONDS}) || '",
    f"' AND 1=(SELECT 1 FROM pg_sleep({SLEEP_SECONDS})) --",
    f"1) OR pg_sleep({SLEEP_SECONDS}) IS NULL --",
]
# Text PostgreSQL cannot store (issue 15, defect 1: a NUL in ?q= reached the database, a 500):
# refused with a 422 problem wherever it is sent, and never reaches a statement.
UNSTORABLE = ["\x00", "a\x00b", "name\x00' OR '1'='1"]
# What a database error looks like when it leaks into an answer.
SQL_ERROR_TEXT = (
    "syntax error",
    "sqlstate",
    "asyncpg",
    "sqlalchemy",
    "psycopg",
    "unterminated quoted",
    "programmingerror",
    "dbapierror",
    "traceback",
    "pg_catalog",
    "postgresql",
)

# Paths whose id has a route convertor (``{user_id:uuid}``, where a literal segment shares the
# path): anything else is not that route at all, so the answer is 404 rather than 422.
CONVERTED = {
    re.sub(r"\{(\w+):uuid\}", r"{\1}", context.path or "")
    for context in iter_route_contexts(offline_app().routes)
    if re.search(r"\{\w+:uuid\}", context.path or "")
}
QUERY_ROUTES = [route for route in ATTACKED if route.query_strings]
PATH_ROUTES = [route for route in ATTACKED if route.path_params]


def _encoded(payload: str) -> list[str]:
    """The payload inside opaque tokens (cursors): base64url JSON lists, as the pattern allows."""
    return [
        base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        for values in ([payload], [payload, payload])
    ]


def _has_pattern(schema: dict[str, Any]) -> bool:
    schema = resolve(schema)
    return "pattern" in schema or any(_has_pattern(part) for part in schema.get("anyOf", []))


def _parameter(route: Route, name: str) -> dict[str, Any]:
    return next(p for p in (route.spec or {}).get("parameters", []) if p["name"] == name)


def _is_uuid(schema: dict[str, Any]) -> bool:
    schema = resolve(schema)
    return schema.get("format") == "uuid" or any(_is_uuid(p) for p in schema.get("anyOf", []))


def _problems(
    where: str,
    response: httpx.Response,
    foreign: set[str],
    allowed: set[int],
    spliced: list[str],
) -> list[str]:
    where = f"{where}: {response.status_code}"
    found = []
    if response.status_code >= 500:
        found.append(f"{where}: server error {response.text[:300]}")
    body = response.text.lower()
    leaked = [marker for marker in SQL_ERROR_TEXT if marker in body]
    if leaked:
        found.append(f"{where}: database error text {leaked} in {response.text[:300]}")
    if any(row_id in response.text for row_id in foreign):
        found.append(f"{where}: another clinic's rows in the answer")
    if response.status_code not in allowed:
        found.append(f"{where}: expected one of {sorted(allowed)}, got {response.text[:300]}")
    if spliced:
        found.append(f"{where}: the payload is in the SQL text of {spliced[:1]}")
    return found


def _shape(response: httpx.Response) -> object:
    """What a boolean-blind attacker compares: the status and the answer's structure."""
    if not response.content:
        return response.status_code, None
    body = response.json()
    if response.is_success:
        if isinstance(body, dict):
            return response.status_code, sorted(body)
        return response.status_code, type(body).__name__
    errors = problem(response).get("errors", [])
    return response.status_code, problem(response).get("type"), [e.get("loc") for e in errors]


async def _elapsed(call: Callable[[], Awaitable[httpx.Response]]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await call()
    return time.perf_counter() - started, response


async def _slept(
    call: Callable[[str], Awaitable[httpx.Response]], template: str, usual: float | None = None
) -> tuple[bool, httpx.Response]:
    """Whether ``pg_sleep(3)`` took ~3 s longer than the same request with ``pg_sleep(0)``, or
    than ``usual`` (what the same request with other payloads took). Confirmed against a fresh
    ``pg_sleep(0)`` request, so that one pause of a busy machine is not taken for an injection."""
    took, response = await _elapsed(lambda: call(template.format(SLEEP_SECONDS)))
    if usual is not None and took - usual < SLEEP_SECONDS - 1:
        return False, response
    for _ in range(2):
        baseline, _ = await _elapsed(lambda: call(template.format(0)))
        took, response = await _elapsed(lambda: call(template.format(SLEEP_SECONDS)))
        if took - baseline < SLEEP_SECONDS - 1:
            return False, response
    return True, response


TIME_TEMPLATES = [payload.replace(str(SLEEP_SECONDS), "{}") for payload in TIME_BASED]

tally.size(
    "sql injection",
    f"{len(QUERY_ROUTES)} routes' query parameters, {len(PATH_ROUTES)} routes' path parameters,"
    f" {sum(len([f for f in body_fields(r) if f.is_string]) for r in WITH_BODY)} body string"
    f" fields of {len(WITH_BODY)} routes",
)


@pytest.fixture(scope="module")
async def foreign(module_world: World, module_superuser_engine: AsyncEngine) -> set[str]:
    """The ids of another furnished clinic's rows in the module's database, which no answer to
    an attack from a clinic of a test's own may show (made once: no test changes it)."""
    other = await furnish(module_world, await module_world.clinic())
    return await ids_of(module_superuser_engine, other.clinic.id)


async def _url(world: World, estate: Estate, route: Route) -> str:
    return route.url(
        {ID_KINDS[n]: await fresh(world, estate.clinic, ID_KINDS[n]) for n in route.path_params}
    )


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=lambda r: r.label)
async def test_injection_in_query_parameters_changes_nothing(
    module_client: httpx.AsyncClient,
    module_world: World,
    module_superuser_engine: AsyncEngine,
    route: Route,
    foreign: set[str],
) -> None:
    client, world, superuser_engine = module_client, module_world, module_superuser_engine
    estate = await furnish(world, await world.clinic())
    url = await _url(world, estate, route)
    caller = await credentials(world, estate.clinic.owner, route)
    body = route.body(estate)
    before = await census(superuser_engine)

    async def call(name: str, payload: str) -> httpx.Response:
        with recording() as sent:
            response = await send(client, caller, route, url, body, params={name: payload})
        spliced.extend(sent.in_text(payload))
        return response

    problems: list[str] = []
    spliced: list[str] = []

    async def check(name: str, payload: str, response: httpx.Response | None = None) -> None:
        response = response or await call(name, payload)
        problems.extend(
            _problems(f"{route.path}?{name}={payload!r}", response, foreign, {200, 422}, spliced)
        )
        spliced.clear()

    for name in route.query_strings:
        place = (route.label, name)
        for payload in sweep.members(TAUTOLOGIES + STACKED + UNION_AND_ERRORS, *place, per_place=3):
            await check(name, payload)
        for payload in sweep.members(UNSTORABLE, *place):
            response = await call(name, payload)
            problems.extend(
                _problems(f"{route.path}?{name}={payload!r}", response, foreign, {422}, spliced)
            )
            if response.status_code == 422 and not problem(response):
                problems.append(f"?{name}={payload!r}: a 422 that is not problem+json")
            spliced.clear()
        for true, false in sweep.members(BOOLEAN_BLIND, *place):
            yes, no = await call(name, true), await call(name, false)
            await check(name, true, yes)
            await check(name, false, no)
            if (yes.status_code, shared_part(yes.json())) != (
                no.status_code,
                shared_part(no.json()),
            ):
                problems.append(f"?{name}= {true!r} and {false!r} answer differently")
        if _has_pattern(_parameter(route, name).get("schema", {})):
            tokens = TAUTOLOGIES + STACKED + UNION_AND_ERRORS + TIME_BASED
            for payload in sweep.members(tokens, *place, "token"):
                for token in _encoded(payload):
                    await check(name, token)
        for template in sweep.members(TIME_TEMPLATES, *place):
            slept, response = await _slept(lambda p, n=name: call(n, p), template)
            await check(name, template.format(SLEEP_SECONDS), response)
            if slept:
                problems.append(f"?{name}={template.format(SLEEP_SECONDS)!r}: pg_sleep ran")

    after = await census(superuser_engine)
    assert not problems, "\n".join(problems)
    assert "pets" in before, "the census sees the application's tables"
    assert after == before, "tables or row counts changed during the attack"


async def test_injection_in_path_parameters_never_reaches_sql(
    module_client: httpx.AsyncClient, module_world: World, module_superuser_engine
) -> None:
    client, world, superuser_engine = module_client, module_world, module_superuser_engine
    estate = await furnish(world, await world.clinic())
    targets = []
    for route in PATH_ROUTES:
        kinds = [ID_KINDS[name] for name in route.path_params]
        ids = {kind: await fresh(world, estate.clinic, kind) for kind in kinds}
        caller = await credentials(world, estate.clinic.owner, route)
        targets.append((route, ids, caller))
    before = await census(superuser_engine)

    failures = []
    for route, ids, caller in targets:
        body = route.body(estate)
        refusal = 404 if route.path in CONVERTED else 422
        for name in route.path_params:
            schema = _parameter(route, name)["schema"]
            assert _is_uuid(schema), (
                f"{route.label}: '{name}' is a path parameter but not a UUID; give it the body"
                " fields' treatment in this suite (stored and read back) before adding it"
            )
            families = (TAUTOLOGIES + UNION_AND_ERRORS, STACKED, TIME_BASED)
            payloads = [p for f in families for p in sweep.members(f, route.label, name)]
            payloads += [
                p for pair in sweep.members(BOOLEAN_BLIND, route.label, name) for p in pair
            ]
            for payload in payloads:
                segment = urllib.parse.quote(payload, safe="")
                url = route.url(ids).replace(str(ids[ID_KINDS[name]]), segment)
                with recording() as sent:
                    elapsed, response = await _elapsed(
                        lambda r=route, u=url, b=body, c=caller: send(client, c, r, u, b)  # type: ignore[misc]
                    )
                where = f"{route.label} {name}={payload!r}"
                if response.status_code != refusal or not problem(response):
                    failures.append(f"{where}: not a {refusal} problem: {explain(response)}")
                if sent.anywhere(payload) or sent.anywhere(segment):
                    failures.append(f"{where}: reached SQL: {sent.anywhere(payload)[:1]}")
                if elapsed >= SLEEP_SECONDS - 1:
                    failures.append(f"{where}: took {elapsed:.1f}s")

    assert not failures, "\n".join(failures)
    assert await census(superuser_engine) == before


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        t: after.get(t, 0) - before.get(t, 0)
        for t in {*before, *after}
        if after.get(t, 0) != before.get(t, 0)
    }


@pytest.mark.parametrize("route", WITH_BODY, ids=lambda r: r.label)
async def test_injection_in_body_fields(
    module_client: httpx.AsyncClient,
    module_world: World,
    module_superuser_engine: AsyncEngine,
    route: Route,
    foreign: set[str],
) -> None:
    client, world, superuser_engine = module_client, module_world, module_superuser_engine
    estate = await furnish(world, await world.clinic())
    url = await _url(world, estate, route)
    actor = None if route.public else estate.clinic.owner

    async def call(
        field: Field | None, payload: str, *, control: bool = False
    ) -> tuple[httpx.Response, dict[str, int]]:
        """The valid body with ``payload`` in ``field``; the answer and what it changed."""
        nonlocal since
        await ready(world, estate, route)
        caller: Credentials = await credentials(world, actor, route)
        body = valid_body(route, estate)
        if field is not None:
            body = with_value(body, field, payload)
        # The last request's "after" is this one's "before", unless making its credentials
        # or what it consumes wrote rows since.
        before = dict(counts) if counts and not consumes else await census(superuser_engine)
        since = await horizon(superuser_engine)
        started = time.perf_counter()
        with recording() as sent:
            response = await send(client, caller, route, url, body)
        took.append(time.perf_counter() - started)
        spliced.extend(sent.in_text(payload) if field is not None and not control else [])
        counts.clear()
        counts.update(await census(superuser_engine))
        # A stored value is a change the trail records, a no-op is not, a refusal its event.
        last["changed"] = outside_the_trail(_delta(before, counts))
        return response, last["changed"]

    # A new session per request (session-only and step-up routes) writes a credential.
    consumes = route.session_only or route.steps_up or route.body_schema in CONSUMED
    counts: dict[str, int] = {}

    spliced: list[str] = []
    since = 0  # the last request's horizon: the rows it wrote have an xmin at or above it
    took: list[float] = []
    last: dict[str, dict[str, int]] = {}
    plain, top_level = await call(None, "")
    assert plain.is_success, f"{route.label}: the example body alone: {explain(plain)}"
    again, changed = await call(None, "")  # the steady state: as below, after a first request
    top_level = changed if again.is_success else top_level
    expected = top_level

    problems: list[str] = []

    async def check(field: Field, payload: str, answer: tuple[httpx.Response, dict[str, int]]):
        response, changed = answer
        where = f"{route.label} {field.label}={payload!r}"
        allowed = {200, 201, 204, 401, 404, 409, 422}
        problems.extend(_problems(where, response, foreign, allowed, spliced))
        spliced.clear()
        if changed != (expected if response.is_success else {}):
            problems.append(f"{where}: changed {changed}, the valid request changes {expected}")
        if field.free_text and field.stored and field.fits(payload):
            if not response.is_success:
                problems.append(f"{where}: free text refused: {explain(response)}")
            elif not await stored_as_given(superuser_engine, payload, since=since):
                problems.append(f"{where}: not stored exactly as given")

    for field in body_fields(route):
        if not field.is_string:
            continue
        expected = top_level
        took.clear()
        if field.containers:  # a nested element is a row of its own: as a valid one changes
            # twice: the second shows the steady state (a PATCH replaces what the first added)
            for _ in range(2):
                answer, changed = await call(field, nested_example(field), control=True)
            expected = changed if answer.is_success else top_level
        place = (route.label, field.label)
        for family in (TAUTOLOGIES + UNION_AND_ERRORS, STACKED):
            for payload in sweep.members(family, *place):
                await check(field, payload, await call(field, payload))
        for payload in sweep.members(UNSTORABLE, *place):
            response, changed = await call(field, payload)
            where = f"{route.label} {field.label}={payload!r}"
            problems.extend(_problems(where, response, foreign, {422}, spliced))
            spliced.clear()
            if response.status_code == 422 and not problem(response):
                problems.append(f"{where}: a 422 that is not problem+json")
            if changed:
                problems.append(f"{where}: refused, yet changed {changed}")
        for true, false in sweep.members(BOOLEAN_BLIND, *place):
            yes = await call(field, true)
            await check(field, true, yes)  # before the next request replaces what it stored
            no = await call(field, false)
            await check(field, false, no)
            if _shape(yes[0]) != _shape(no[0]):
                problems.append(f"{route.label} {field.label}: {true!r} and {false!r} differ")
        usual = max(took)
        for template in sweep.members(TIME_TEMPLATES, *place):
            slept, response = await _slept(lambda p, f=field: _only(call(f, p)), template, usual)
            await check(field, template.format(SLEEP_SECONDS), (response, last["changed"]))
            if slept:
                problems.append(
                    f"{route.label} {field.label}={template.format(SLEEP_SECONDS)!r}: pg_sleep ran"
                )

    assert not problems, "\n".join(problems)


async def _only(answer: Awaitable[tuple[httpx.Response, dict[str, int]]]) -> httpx.Response:
    return (await answer)[0]


def test_every_body_string_field_is_attacked() -> None:
    """The discovery sees nested fields and every route with a body."""
    labels = {(r.body_schema, f.label) for r in WITH_BODY for f in body_fields(r) if f.is_string}
    assert ("RecordIn", "vaccinations.0.vaccine") in labels
    assert ("PetIn", "alerts.0") in labels
    assert ("CustomerIn", "first_name") in labels
    assert all("string" in types(f.spec) or f.types for r in WITH_BODY for f in body_fields(r))
