"""Every response schema round-trips: model -> JSON -> model gives the same model, and the JSON
is valid against the model's own serialization schema (formats included).

The response models are discovered from the app, never listed by hand: each route's
``response_model`` (``list[X]`` gives ``X``; ``Page[X]`` is a model of its own) and every model
a route's documented responses refer to by ``$ref`` (the problem+json body). Instances are drawn
by Hypothesis from the models' fields. A field of a type or constraint this file has no strategy
for fails the test naming the model and the field: a new response model is covered or loud,
never skipped.

Generated values are those the service can put in a response: timestamps are time-zone aware
(they come from ``timestamptz`` columns) with whole-minute offsets, within the years the API
accepts; floats are finite; text is any Unicode PostgreSQL can store.

The schema check uses ``jsonschema_rs`` (installed with Schemathesis, in the ``test`` extra),
with format validation on. No network, no database: the app is built but never started.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
import uuid
from functools import cache
from typing import Any

import annotated_types
import hypothesis
import jsonschema_rs
import pytest
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import BaseModel, PlainSerializer, WrapSerializer
from pydantic.fields import FieldInfo

from app.kit.pagination import Page
from app.kit.types import Output
from tests.contract.snapshot import offline_app
from tests.harness import jsonwalk

INT64 = 2**63 - 1
"""Integer columns are at most ``bigint``."""
MAX_ITEMS = 4
"""Lists are kept short: one item round-trips like fifty, and examples stay fast."""
CHARACTERS = st.characters(exclude_categories=("Cs",))
"""Any text PostgreSQL's UTF-8 can hold (lone surrogates cannot be encoded)."""
AWARE = st.datetimes(
    min_value=dt.datetime(1900, 1, 2),
    max_value=dt.datetime(2200, 12, 30),
    # Offsets in whole minutes: RFC 3339 (and pydantic) write no seconds in an offset.
    timezones=st.just(dt.UTC)
    | st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
        lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
    ),
)
DATES = st.dates(dt.date(1900, 1, 1), dt.date(2200, 12, 31))


class NoStrategy(TypeError):
    """A response model has a field this file cannot generate."""


# -- discovery ------------------------------------------------------------------------------------
def _app_models() -> dict[str, type[BaseModel]]:
    """Every pydantic model defined in app/, by name (for resolving ``$ref`` targets)."""
    found: dict[str, type[BaseModel]] = {}
    todo: list[type[BaseModel]] = [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("app.") and not sub.__pydantic_generic_metadata__["args"]:
                found.setdefault(sub.__name__, sub)
    return found


def _unwrap(annotation: Any) -> list[type[BaseModel]]:
    """The models in a response annotation: ``X``, ``list[X]``, ``X | None``..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _unwrap(arg)]


def _refs(node: Any) -> list[str]:
    """The schemas ``node`` refers to by ``$ref``, in document order."""
    return [
        item["$ref"].rsplit("/", 1)[-1]
        for item in jsonwalk.walk(node)
        if isinstance(item, dict) and isinstance(item.get("$ref"), str)
    ]


Dump = tuple[tuple[str, bool], ...]
"""``model_dump_json`` keyword arguments, as a hashable tuple."""
PROBLEM_DUMP: Dump = (("by_alias", True), ("exclude_none", True))
"""How app.kit.problems.problem_response writes a problem: without its null members."""


def _route_dump(route: APIRoute) -> Dump:
    """The serialisation options FastAPI applies to this route's response model."""
    return (
        ("by_alias", route.response_model_by_alias),
        ("exclude_unset", route.response_model_exclude_unset),
        ("exclude_defaults", route.response_model_exclude_defaults),
        ("exclude_none", route.response_model_exclude_none),
    )


@cache
def response_models() -> dict[type[BaseModel], frozenset[Dump]]:
    """Every response model, with each way a route writes it as JSON."""
    app = offline_app()
    by_name = _app_models()
    found: dict[type[BaseModel], set[Dump]] = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for model in _unwrap(route.response_model):
            found.setdefault(model, set()).add(_route_dump(route))
        for documented in route.responses.values():
            for model in _unwrap(documented.get("model")):
                found.setdefault(model, set()).add(_route_dump(route))
            for name in _refs(documented.get("content", {})):
                # A $ref the app's models cannot resolve is a discovery failure, not a skip.
                assert name in by_name, f"{route.path}: no model named {name} in app/"
                found.setdefault(by_name[name], set()).add(PROBLEM_DUMP)
    return {model: frozenset(found[model]) for model in sorted(found, key=lambda m: m.__name__)}


def _nested(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model its fields contain, however deep."""
    seen: set[type[BaseModel]] = set()
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for info in current.model_fields.values():
            todo.extend(_unwrap(info.annotation))
    return seen


# -- generation -----------------------------------------------------------------------------------
def _bounds(metadata: list[Any], where: str) -> dict[str, Any]:
    """annotated-types constraints as keyword arguments; anything else is not understood."""
    bounds: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            bounds |= _bounds(item.metadata, where)
        elif isinstance(item, PlainSerializer | WrapSerializer):
            continue  # how a value is written, not which values exist: the round trip's subject
        elif isinstance(item, annotated_types.MaxLen):
            bounds["max_size"] = item.max_length
        elif isinstance(item, annotated_types.MinLen):
            bounds["min_size"] = item.min_length
        elif isinstance(item, annotated_types.Ge):
            bounds["min_value"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["max_value"] = item.le
        elif isinstance(item, annotated_types.Gt):
            bounds |= {"min_value": item.gt, "exclude_min": True}
        elif isinstance(item, annotated_types.Lt):
            bounds |= {"max_value": item.lt, "exclude_max": True}
        else:
            raise NoStrategy(f"{where}: no strategy for the constraint {item!r}")
    return bounds


def _only(bounds: dict[str, Any], allowed: set[str], where: str, kind: str) -> dict[str, Any]:
    unknown = set(bounds) - allowed
    if unknown:
        raise NoStrategy(f"{where}: {kind} with constraints {sorted(unknown)}")
    return bounds


def strategy_for(annotation: Any, metadata: list[Any], where: str) -> st.SearchStrategy[Any]:
    """Values of ``annotation`` (with pydantic ``metadata`` constraints) a response can carry."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return strategy_for(args[0], [*metadata, *args[1:]], where)
    if origin in (typing.Union, types.UnionType):
        # Constraints on ``X | None`` apply to X.
        return st.one_of(
            [st.none() if arg is type(None) else strategy_for(arg, metadata, where) for arg in args]
        )
    bounds = _bounds(metadata, where)
    if origin is list:
        sizes = _only(bounds, {"min_size", "max_size"}, where, "a list")
        sizes["max_size"] = min(sizes.get("max_size", MAX_ITEMS), MAX_ITEMS)
        return st.lists(strategy_for(args[0], [], f"{where}[]"), **sizes)
    if args or not isinstance(annotation, type):
        raise NoStrategy(f"{where}: no strategy for {annotation!r}")
    if issubclass(annotation, BaseModel):
        _only(bounds, set(), where, "a model")
        return model_strategy(annotation)
    if issubclass(annotation, enum.Enum):
        _only(bounds, set(), where, "an enum")
        return st.sampled_from(list(annotation))
    if annotation is bool:
        _only(bounds, set(), where, "a bool")
        return st.booleans()
    if annotation is int:
        limits = _only(bounds, {"min_value", "max_value"}, where, "an int")
        return st.integers(limits.get("min_value", -INT64), limits.get("max_value", INT64))
    if annotation is float:
        limits = _only(
            bounds, {"min_value", "max_value", "exclude_min", "exclude_max"}, where, "a float"
        )
        return st.floats(allow_nan=False, allow_infinity=False, **limits)
    if annotation is str:
        sizes = _only(bounds, {"min_size", "max_size"}, where, "a string")
        return st.text(CHARACTERS, **sizes)
    if annotation is uuid.UUID:
        _only(bounds, set(), where, "a UUID")
        return st.uuids()
    if annotation is dt.datetime:
        _only(bounds, set(), where, "a timestamp")
        return AWARE
    if annotation is dt.date:
        _only(bounds, set(), where, "a date")
        return DATES
    raise NoStrategy(f"{where}: no strategy for {annotation!r}")


@cache
def model_strategy(model: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    fields = {
        name: strategy_for(info.annotation, list(info.metadata), f"{model.__name__}.{name}")
        for name, info in model.model_fields.items()
    }
    # Built through validation: an instance the model itself would refuse is never tested.
    return st.fixed_dictionaries(fields).map(lambda values: model(**values))


# -- the properties -------------------------------------------------------------------------------
MODELS = response_models()


def test_discovery_finds_the_api_response_models() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"PetOut", "AppointmentOut", "RecordOut", "CustomerOut", "ProblemBody"} <= names
    pages = [m for m in MODELS if m.__pydantic_generic_metadata__["origin"] is Page]
    assert {"Page[PetOut]", "Page[AppointmentOut]", "Page[CustomerOut]"} <= {
        page.__name__ for page in pages
    }
    assert len(pages) >= 5, pages
    assert len(MODELS) >= 15, names


def test_every_output_model_is_a_response_or_inside_one() -> None:
    """An ``Output`` no route answers with would escape this file: it must be reachable."""
    reachable = set().union(*(_nested(model) for model in MODELS))
    outputs: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [Output]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("app."):
                outputs.add(sub)
    unreachable = sorted(model.__name__ for model in outputs - reachable)
    assert not unreachable, f"Output models no route answers with: {unreachable}"


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_response_model_round_trips_through_json(model: type[BaseModel]) -> None:
    dumps = [dict(options) for options in sorted(MODELS[model])]
    try:
        instances = model_strategy(model)
        instances.validate()
    except NoStrategy as exc:
        pytest.fail(f"{model.__name__} cannot be generated: {exc}")
    schema = model.model_json_schema(mode="serialization")
    # Formats (uuid, date, date-time) are checked too; nothing is fetched ($defs are local).
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)

    # A fifth of the profile's examples per model (10 on a pull request, 200 nightly): drawing
    # a page of records costs far more than its round trip, and the pr set has a budget.
    @hypothesis.settings(
        max_examples=max(hypothesis.settings.default.max_examples // 5, 10),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(instance=instances)
    def round_trips(instance: BaseModel) -> None:
        for options in dumps:
            # As the routes write it: FastAPI dumps by alias, a problem without its nulls.
            text = instance.model_dump_json(**options)
            again = model.model_validate_json(text)
            assert again == instance, f"{model.__name__} ({options}): {text}"
            # The same JSON again: nothing drifts on a second trip (offsets, precision, order).
            assert again.model_dump_json(**options) == text
            errors = [
                f"{e.instance_path}: {e.message}" for e in validator.iter_errors(json.loads(text))
            ]
            assert not errors, f"{model.__name__} JSON breaks its own schema: {errors}\n{text}"

    round_trips()


def test_every_model_route_keeps_fastapis_fast_json_path() -> None:
    """A route answering a response model is serialised by pydantic straight to JSON bytes
    only while its response class is FastAPI's placeholder: a class set outright (on the app
    or the route) turns that off for every such route (found: ``default_response_class``)."""
    routes = [
        context
        for context in iter_route_contexts(offline_app().routes)
        if isinstance(context.original_route, APIRoute)
        and context.original_route.response_model is not None
    ]
    assert len(routes) > 50  # the routes are found
    slow = [
        f"{sorted(context.methods)} {context.path}"
        for context in routes
        if not isinstance(context.response_class, DefaultPlaceholder)
    ]
    assert slow == []
