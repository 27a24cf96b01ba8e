"""Every class of code point, in every place a request carries text: no 5xx, and every refusal
is problem+json.

Found from outside (issue 15, defects 1 and 2): a NUL in ``?q=`` and a 2,000-character path were
500s although the fuzzer reported none, because its few examples per operation rarely drew those
characters and never drew them in a path or a header. So this suite draws them on purpose: each
class below goes into each query parameter and each path parameter of every route (on a pull
request four classes per parameter, a different four for each, so that every class reaches many:
tests/harness/sweep.py; every class everywhere at night), into each header the service reads (on
a route chosen in turn, so every route gets some), and into each string field of every request
body. It asserts nothing about what a route does with the text, only that the answer is one a
client can rely on; the injection and strict-schema suites check what changes.
"""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest

from tests.harness import sweep, tally
from tests.harness.world import World
from tests.security.bodies import WITH_BODY, body_fields, ready, valid_body, with_value
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    Route,
    credentials,
    explain,
    problem,
    send,
)
from tests.security.estate import Estate, fresh, furnish

CLASSES: dict[str, str] = {
    "NUL": "a\x00b",
    "C0 controls": "\x01\x07\x08\x1b[31m",
    "DEL and C1 controls": "\x7f\x85\x9b",
    "lone surrogate": "a\ud800b",
    "noncharacters U+FFFE U+FFFF": "\ufffe\uffff",
    "bidi overrides": "\u202egnp.exe\u202c\u2066x\u2069",
    "zero width and BOM": "\u200b\u200d\ufeff",
    "line and paragraph separators": "a\u2028b\u2029c\r\n",
    "astral plane": "\U0001f415\U0010fffd",
    "combining marks": "e" + "\u0301" * 40,
    "fullwidth and homoglyphs": "\uff41\u0430\u0391",
    "64 KiB": "x" * 65_536,
}
"""What a fuzzer rarely draws by chance: one example of each class of hostile text."""
INVALID_UTF8 = b"\xff\xfe\xc3("
"""Bytes that are no UTF-8 at all: only a URL or a header can carry them."""

HEADERS = (
    "Authorization",
    "Cookie",
    "X-CSRF-Token",
    "Origin",
    "Range",
    "If-Range",
    "Content-Type",
    "Stripe-Signature",
    "X-Forwarded-For",
    "User-Agent",
    "Accept",
)
"""Headers the service reads (and two any client sends)."""


def _bytes(text: str) -> bytes:
    # A lone surrogate has no UTF-8; "surrogatepass" sends the bytes a careless client would.
    return text.encode("utf-8", "surrogatepass")


URL_ROOM = 60_000
"""The longest payload a URL carries here (httpx refuses URLs over 64 KiB): far past the
service's own limit (``VETIFY_MAX_URL_BYTES``, 8 KiB), which answers 414."""


def _escaped(raw: bytes) -> str:
    return urllib.parse.quote(raw, safe="")[:URL_ROOM]


def _payloads() -> dict[str, bytes]:
    return {**{name: _bytes(text) for name, text in CLASSES.items()}, "invalid UTF-8": INVALID_UTF8}


def _query_names(route: Route) -> list[str]:
    return [p["name"] for p in (route.spec or {}).get("parameters", []) if p["in"] == "query"]


PAYLOADS = _payloads()
QUERY_ROUTES = [r for r in ATTACKED if _query_names(r)]
PATH_ROUTES = [r for r in ATTACKED if r.path_params]


CLASSES_PER_PARAMETER = 4


def _classes(route: Route, name: str) -> list[str]:
    """The classes sent to ``route``'s parameter ``name`` on this run."""
    return sweep.members(list(PAYLOADS), route.label, name, per_place=CLASSES_PER_PARAMETER)


def _body_cases() -> int:
    return sum(len(CLASSES) for r in WITH_BODY if any(f.is_string for f in body_fields(r)))


def _requests() -> int:
    url = sum(len(_classes(r, n)) for r in QUERY_ROUTES for n in _query_names(r)) + sum(
        len(_classes(r, n)) for r in PATH_ROUTES for n in r.path_params
    )
    return url + len(HEADERS) * len(PAYLOADS) + _body_cases()


tally.size(
    "hostile text",
    f"{len(PAYLOADS)} code-point classes: {sum(len(_query_names(r)) for r in QUERY_ROUTES)} query"
    f" parameters and {sum(len(r.path_params) for r in PATH_ROUTES)} path parameters"
    f" x {'all' if sweep.full() else CLASSES_PER_PARAMETER}, {len(HEADERS)} headers"
    f" x {len(PAYLOADS)}, {_body_cases()} body strings:"
    f" {_requests()} requests",
)


def _wrong(where: str, response: httpx.Response) -> list[str]:
    """What is wrong with an answer to hostile text: a 5xx, or a refusal not problem+json."""
    if response.status_code >= 500:
        return [f"{where}: {explain(response)}"]
    if response.status_code >= 400 and not problem(response):
        return [f"{where}: a {response.status_code} that is not problem+json: {explain(response)}"]
    return []


async def _url(world: World, estate: Estate, route: Route) -> str:
    return route.url(
        {ID_KINDS[n]: await fresh(world, estate.clinic, ID_KINDS[n]) for n in route.path_params}
    )


def test_every_class_reaches_parameters_of_both_kinds_on_every_run() -> None:
    """The sample is over classes, never over the surface: every parameter gets some classes,
    and every class reaches query and path parameters."""
    query = [set(_classes(r, n)) for r in QUERY_ROUTES for n in _query_names(r)]
    path = [set(_classes(r, n)) for r in PATH_ROUTES for n in r.path_params]
    assert all(query)
    assert all(path)
    assert set().union(*query) == set().union(*path) == set(PAYLOADS)


async def test_every_class_in_every_query_and_path_parameter(
    module_client: httpx.AsyncClient, module_world: World
) -> None:
    client, world = module_client, module_world
    estate = await furnish(world, await world.clinic())
    failures: list[str] = []
    for route in {r.key: r for r in [*QUERY_ROUTES, *PATH_ROUTES]}.values():
        url = await _url(world, estate, route)
        caller = await credentials(world, estate.clinic.owner, route)
        body = route.body(estate)
        for name in _query_names(route):
            for label in _classes(route, name):
                where = f"{route.label} ?{name}= {label}"
                attacked = f"{url}?{urllib.parse.quote(name)}={_escaped(PAYLOADS[label])}"
                failures += _wrong(where, await send(client, caller, route, attacked, body))
        for name in route.path_params:
            segment = url.split("/")[route.path.split("/").index("{" + name + "}")]
            for label in _classes(route, name):
                attacked = url.replace(segment, _escaped(PAYLOADS[label]), 1)
                where = f"{route.label} {{{name}}} {label}"
                failures += _wrong(where, await send(client, caller, route, attacked, body))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("header", HEADERS)
async def test_every_class_in_every_header(
    module_client: httpx.AsyncClient, module_world: World, header: str
) -> None:
    client, world = module_client, module_world
    estate = await furnish(world, await world.clinic())
    failures: list[str] = []
    for label, raw in PAYLOADS.items():
        route = sweep.one(ATTACKED, header, label)
        url = await _url(world, estate, route)
        caller = await credentials(world, estate.clinic.owner, route)
        await ready(world, estate, route)
        hostile = {header: raw}
        response = await send(client, caller, route, url, route.body(estate), headers=hostile)
        failures += _wrong(f"{route.label} {header}: {label}", response)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", WITH_BODY, ids=lambda r: r.label)
async def test_every_class_in_a_string_field_of_every_body(
    module_client: httpx.AsyncClient, module_world: World, route: Route
) -> None:
    client, world = module_client, module_world
    estate = await furnish(world, await world.clinic())
    url = await _url(world, estate, route)
    strings = [f for f in body_fields(route) if f.is_string]
    failures: list[str] = []
    for label, text in CLASSES.items():
        if not strings:
            break
        field = sweep.one(strings, route.label, label)
        await ready(world, estate, route)
        caller = await credentials(world, None if route.public else estate.clinic.owner, route)
        body = with_value(valid_body(route, estate), field, text)
        if route.multipart:
            response = await send(client, caller, route, url, body)
        else:  # as JSON text with \u escapes, the only way JSON carries a lone surrogate
            client.cookies.clear()
            client.cookies.update(caller.cookies)
            response = await client.request(
                route.method,
                url,
                content=json.dumps(body).encode(),
                headers={**caller.headers, "Content-Type": "application/json"},
            )
        failures += _wrong(f"{route.label} {field.label}: {label}", response)
    assert not failures, "\n".join(failures)
