"""Request bodies are strict, generated over every property of every request schema (nested
ones included): a value of another JSON type, an unknown field, a malformed email or a phone
number that is not E.164 is refused with a 422 problem naming the field, and nothing changes.
Statically: every string a client may send is bounded.

The valid example body of each route (tests/security/catalogue.py) carries each attack, so
the attack is the only thing wrong with the request; the same body alone must then succeed.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.kit.types import Phone
from tests.harness import tally
from tests.harness.api import PROBLEM_JSON
from tests.harness.world import World
from tests.security.bodies import (
    ITEMS,
    WITH_BODY,
    Field,
    body_fields,
    names,
    ready,
    valid_body,
    with_value,
)
from tests.security.catalogue import ATTACKED, ID_KINDS, Route, credentials, explain, send
from tests.security.estate import fresh, furnish, rows_of
from tests.security.surface import census, resolve, types

CONFUSIONS: dict[str, list[Any]] = {
    "integer": [True, False, "1", 1.5],
    "number": [True, False, "1"],
    "string": [1, True, {"text": "x"}, ["x"]],
    "boolean": [1, 0, "true"],
    "array": ["x", {"0": "x"}],
    "object": ["x", ["x"]],
}
"""For a property of each JSON type: values of other types a lax parser would coerce."""

MALFORMED_EMAILS = [
    "ana.example.org",
    "ana@",
    "@example.org",
    "ana@@example.org",
    "ana@exa mple.org",
]
MALFORMED_PHONES = [
    "351912345678",
    "+351 912 345 678",
    "+0351912345",
    "+1234567890123456",
    "912-345-678",
]
PHONE_PATTERN = next(m.pattern for m in Phone.__metadata__ if getattr(m, "pattern", None))
UNKNOWN = "is_admin"

FIXED_SIZE_FORMATS = {"uuid", "date", "date-time"}
"""Formats whose text has a fixed shape: bounded without a maxLength."""


def _json_types(value: Any) -> set[str]:
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number"}
    return {{str: "string", dict: "object", list: "array"}[type(value)]}


def _confusions(field: Field) -> list[Any]:
    values = [v for t in sorted(field.types - {"null"}) for v in CONFUSIONS.get(t, [])]
    return [v for v in values if not _json_types(v) & field.types]


def _malformed(field: Field) -> list[str]:
    if field.spec.get("format") == "email":
        return MALFORMED_EMAILS
    if field.spec.get("pattern") == PHONE_PATTERN:
        return MALFORMED_PHONES
    return []


def _unknown_fields(route: Route) -> list[Field]:
    """An unknown property at the top and in every nested object of the body."""
    top = Field(str(route.body_schema), UNKNOWN, (UNKNOWN,), {}, frozenset())
    nested = [
        Field(f.schema, UNKNOWN, (*f.path[:-1], UNKNOWN), {}, frozenset(), f.containers)
        for f in body_fields(route)
        if f.containers and f.containers[-1] is not None
    ]
    return [top, *{f.path: f for f in nested}.values()]


tally.size(
    "strict schemas",
    f"{len(WITH_BODY)} routes with a body: "
    f"{sum(len(_confusions(f)) + len(_malformed(f)) for r in WITH_BODY for f in body_fields(r))}"
    " wrong types and malformed values",
)


@pytest.mark.parametrize("route", WITH_BODY, ids=lambda r: r.label)
async def test_wrong_types_unknown_fields_and_malformed_values_are_refused(
    module_client: httpx.AsyncClient, module_world: World, module_superuser_engine, route: Route
) -> None:
    client, world, superuser_engine = module_client, module_world, module_superuser_engine
    estate = await furnish(world, await world.clinic())
    actor = None if route.public else estate.clinic.owner
    url = route.url(
        {ID_KINDS[n]: await fresh(world, estate.clinic, ID_KINDS[n]) for n in route.path_params}
    )
    await ready(world, estate, route)
    caller = await credentials(world, actor, route)
    body = valid_body(route, estate)
    before = await census(superuser_engine), await rows_of(superuser_engine, estate.clinic.id)

    attacks = [(f, v) for f in body_fields(route) for v in [*_confusions(f), *_malformed(f)]]
    attacks += [(f, "x") for f in _unknown_fields(route)]
    failures = []
    for field, value in attacks:
        response = await send(client, caller, route, url, with_value(body, field, value))
        if not (
            response.status_code == 422
            and response.headers.get("content-type") == PROBLEM_JSON
            and names(response, field.path)
        ):
            failures.append(f"{field.label}={value!r}: {explain(response)}")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
    after = await census(superuser_engine), await rows_of(superuser_engine, estate.clinic.id)
    assert after == before, "a refused request changed data"
    plain = await send(client, caller, route, url, body)
    assert plain.is_success, f"the example body alone: {explain(plain)}"


def test_every_nested_schema_has_an_example() -> None:
    nested = {c for r in WITH_BODY for f in body_fields(r) for c in f.containers if c}
    assert nested <= set(ITEMS), f"add examples to bodies.ITEMS for {sorted(nested - set(ITEMS))}"


# -- bounded input ------------------------------------------------------------------------------
_UNBOUNDED_QUANTIFIER = re.compile(r"(?<!\\)[*+]|\{\d+,\}")


def _bounded_pattern(pattern: str) -> bool:
    """Anchored at both ends with only bounded repetition: the pattern alone limits length."""
    return (
        pattern.startswith("^")
        and pattern.endswith("$")
        and not _UNBOUNDED_QUANTIFIER.search(re.sub(r"\\.", "", pattern))
    )


def _unbounded(label: str, schema: dict[str, Any]) -> list[str]:
    """Why a string (or an array) a client sends has no upper bound on its size."""
    found = []
    for variant in [resolve(v) for v in schema.get("anyOf", [schema])]:
        kind = variant.get("type")
        if kind == "string" and not (
            "maxLength" in variant
            or "enum" in variant
            or variant.get("format") in FIXED_SIZE_FORMATS
            or _bounded_pattern(variant.get("pattern", ""))
        ):
            found.append(f"{label}: a string without maxLength, enum, fixed format or pattern")
        if kind == "array":
            if "maxItems" not in variant:
                found.append(f"{label}: an array without maxItems")
            found += _unbounded(f"{label}[]", variant.get("items", {}))
    return found


def test_every_string_a_client_sends_is_bounded() -> None:
    violations = []
    for route in ATTACKED:
        for parameter in (route.spec or {}).get("parameters", []):
            label = f"{route.label} {parameter['in']} {parameter['name']}"
            violations += _unbounded(label, parameter.get("schema", {}))
        if route.body_schema and not route.multipart:
            for field in body_fields(route):
                if "string" in field.types or "array" in field.types:
                    violations += _unbounded(f"{field.schema}.{field.name}", field.spec)
    assert not sorted(set(violations)), "\n".join(sorted(set(violations)))


def test_the_bound_check_sees_an_unbounded_string() -> None:
    assert _unbounded("x", {"type": "string", "pattern": "^[^\\x00]*$"})
    assert _unbounded("x", {"type": "array", "items": {"type": "string", "maxLength": 5}})
    assert not _unbounded("x", {"type": "string", "pattern": "^\\+[1-9][0-9]{6,14}$"})
    assert not _unbounded("x", {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]})
    assert "integer" in types({"anyOf": [{"type": "integer"}, {"type": "null"}]})
