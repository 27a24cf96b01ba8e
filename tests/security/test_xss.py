"""Cross-site scripting: markup in free text is stored exactly as sent and the API answers it
only as JSON; markup in a query or path value never comes back in anything but JSON.

Free text is kept as given; the web app's pages escape it on output (Jinja2 autoescaping, held
by tests/security/test_pages.py with these payloads stored in what every page shows).
Sanitising on input would mangle clinical notes ("weight < 5 kg") and still not make text safe
for every output context, so no field accepts rich text: the first test fails when one is
declared, until sanitising (nh3) comes with it.

Free-text fields are discovered from the document (string body properties without enum, format
or a pattern beyond "no NUL, not blank"; tests/security/bodies.py).
"""

from __future__ import annotations

import urllib.parse
import zlib
from typing import Any

import httpx
import pytest

from tests.harness import jsonwalk, tally
from tests.harness.world import World
from tests.security.bodies import (
    WITH_BODY,
    Field,
    body_fields,
    is_json,
    ready,
    valid_body,
    with_value,
)
from tests.security.catalogue import (
    ANONYMOUS,
    EXEMPT,
    ID_KINDS,
    ROUTES,
    Route,
    credentials,
    explain,
    send,
)
from tests.security.estate import fresh, furnish
from tests.security.surface import horizon, stored_as_given

XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(1)>",
    "javascript:alert(1)",
    "'';!--\"<XSS>=&{()}",
    '<iframe src="javascript:alert(1)"></iframe>',
    "{{constructor.constructor('alert(1)')()}}",
    "</textarea><script>alert(document.cookie)</script>",
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
]
PER_FIELD = 2
"""Payloads stored per free-text field (chosen by the field's name, the same on every run)."""

RICH_TEXT_MARKERS = ("html", "markdown", "rich")
"""What a schema would say to declare rich text: ``contentMediaType: text/html``,
``format: html``/``markdown``, ``x-rich-text``..."""


def _free_text(route: Route) -> list[Field]:
    return [field for field in body_fields(route) if field.free_text and field.stored]


STORING = [route for route in WITH_BODY if _free_text(route)]
GET_BY_PATH = {route.path: route for route in ROUTES if route.method == "GET"}

tally.size(
    "xss",
    f"{sum(len(_free_text(r)) for r in STORING)} free-text fields of {len(STORING)} routes"
    f" x {PER_FIELD} payloads; reflected in {len(ROUTES)} routes",
)


def _payloads(route: Route, field: Field) -> list[str]:
    fitting = [payload for payload in XSS if field.fits(payload)]
    assert fitting, f"{route.label} {field.label}: no payload fits maxLength {field.max_length}"
    start = zlib.crc32(f"{route.label} {field.label}".encode())
    return [fitting[(start + i) % len(fitting)] for i in range(min(PER_FIELD, len(fitting)))]


@pytest.mark.parametrize("route", WITH_BODY, ids=lambda r: r.label)
def test_no_field_accepts_rich_text(route: Route) -> None:
    declared = [
        f"{field.label}: {key}={value!r}"
        for field in body_fields(route)
        for key, value in field.spec.items()
        if (key in {"contentMediaType", "contentEncoding", "format"} or key.startswith("x-"))
        and any(marker in f"{key}{value}".lower() for marker in RICH_TEXT_MARKERS)
    ]
    assert not declared, (
        f"{route.label} accepts rich text ({declared}); sanitise it on input with nh3 (an"
        " allow-list of tags) and test that before declaring it"
    )


def _read_back_url(route: Route, url: str, response: httpx.Response) -> str | None:
    """Where the resource a request stored is read: itself (PATCH) or its item under the
    collection it was created in (POST)."""
    if route.method == "PATCH" and route.path in GET_BY_PATH:
        return url
    body = response.json() if response.content else None
    items = [path for path in GET_BY_PATH if path.startswith(route.path + "/{")]
    if route.method == "POST" and isinstance(body, dict) and "id" in body and items:
        return f"{url}/{body['id']}"
    return None


@pytest.mark.parametrize("route", STORING, ids=lambda r: r.label)
async def test_markup_in_free_text_is_stored_as_given_and_answered_as_json(
    module_client: httpx.AsyncClient, module_world: World, module_superuser_engine, route: Route
) -> None:
    client, world, superuser_engine = module_client, module_world, module_superuser_engine
    estate = await furnish(world, await world.clinic())
    actor = None if route.public else estate.clinic.owner
    url = route.url(
        {ID_KINDS[n]: await fresh(world, estate.clinic, ID_KINDS[n]) for n in route.path_params}
    )

    failures = []
    for field in _free_text(route):
        for payload in _payloads(route, field):
            where = f"{route.label} {field.label}={payload!r}"
            await ready(world, estate, route)
            caller = await credentials(world, actor, route)
            body = with_value(valid_body(route, estate), field, payload)
            since = await horizon(superuser_engine)
            response = await send(client, caller, route, url, body)
            # JSON, or no content at all (204: nothing for a browser to render).
            answered = response.status_code == 204 or is_json(response)
            if not response.is_success or not answered:
                failures.append(
                    f"{where}: {response.headers.get('content-type')} {explain(response)}"
                )
                continue
            if not await stored_as_given(superuser_engine, payload, since=since):
                failures.append(f"{where}: not stored exactly as given")
            read_back = _read_back_url(route, url, response)
            if read_back is not None:
                read = await send(client, caller, GET_BY_PATH[_get_path(route)], read_back, None)
                if not is_json(read) or payload not in set(jsonwalk.strings(read.json())):
                    failures.append(f"{where}: read back from {read_back}: {explain(read)}")

    assert not failures, "\n".join(failures)


def _get_path(route: Route) -> str:
    if route.method == "PATCH":
        return route.path
    return next(path for path in GET_BY_PATH if path.startswith(route.path + "/{"))


def _reflections(payload: str, route: Route, ids: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, url) with the payload in each path parameter and a path segment of its own,
    and for reads in each query parameter and an unknown one. (Not in the query of a write:
    a valid write with an extra query parameter would succeed, e.g. log the caller out.)"""
    quoted = urllib.parse.quote(payload, safe="")
    base = route.url(ids)
    found = [(route.method, base.replace(str(ids[ID_KINDS[n]]), quoted)) for n in route.path_params]
    found.append((route.method, f"{base.rstrip('/')}/{quoted}"))
    if route.method == "GET":
        names = [p["name"] for p in (route.spec or {}).get("parameters", []) if p["in"] == "query"]
        for name in ["unknown", *names]:
            found.append(("GET", f"{base}?{urllib.parse.urlencode({name: payload})}"))
    return found


async def test_markup_in_query_and_path_values_comes_back_only_as_json(
    module_client: httpx.AsyncClient, module_world: World
) -> None:
    client, world = module_client, module_world
    estate = await furnish(world, await world.clinic())
    owner = estate.clinic.owner
    requests: list[tuple[str, str, str]] = []
    for route in ROUTES:
        if route.method == "*":
            continue
        payload = XSS[zlib.crc32(route.label.encode()) % len(XSS)]
        ids = {ID_KINDS[n]: estate[ID_KINDS[n]] for n in route.path_params}
        requests += [(m, url, payload) for m, url in _reflections(payload, route, ids)]
    # An unknown route and a method a route does not allow answer too (404, 405).
    for payload in XSS:
        quoted = urllib.parse.quote(payload, safe="")
        requests += [
            ("GET", f"/api/v1/{quoted}", payload),
            ("GET", f"/{quoted}", payload),
            ("PUT", f"/api/v1/pets?{urllib.parse.urlencode({'q': payload})}", payload),
        ]

    failures = []
    for method, url, payload in requests:
        for caller in (ANONYMOUS, await credentials(world, owner, _plain(method, url))):
            client.cookies.clear()
            client.cookies.update(caller.cookies)
            response = await client.request(method, url, headers=caller.headers)
            if is_json(response) or _stored_file(response):
                continue
            quoted = urllib.parse.quote(payload, safe="")
            reflected = payload in response.text or quoted in response.text
            if reflected or (method, _path(url)) not in _HTML_ALLOWED:
                failures.append(
                    f"{method} {url}: {response.status_code}"
                    f" {response.headers.get('content-type')}: {response.text[:200]}"
                )

    assert not failures, "\n".join(failures[:40])


def _stored_file(response: httpx.Response) -> bool:
    """A download (an attachment's stored bytes, an export of the audit trail), which no
    browser renders in our origin."""
    return (
        response.headers.get("content-disposition", "").startswith("attachment")
        and "sandbox" in response.headers.get("content-security-policy", "")
        and response.headers.get("x-content-type-options") == "nosniff"
    )


_HTML_ALLOWED = {(method, path) for method, path in EXEMPT if path == "/docs"}
"""The Swagger UI page is HTML (static, and it reflects nothing: checked above)."""


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def _plain(method: str, url: str) -> Route:
    return Route(method, _path(url), None, None)


async def test_the_stored_check_finds_only_what_the_request_wrote(
    client: httpx.AsyncClient, world: World, superuser_engine
) -> None:
    """The suites above share a module's database, where an earlier test may have stored the
    same payload: a check that searched every row passed for a request that stored nothing (a
    pet's sealed alerts were missed so, in one CI run and not the next). ``stored_as_given``
    looks only at rows written since the horizon taken before the request: in a plain column
    and in a sealed one."""
    clinic = await world.clinic()
    payload = "<svg/onload=alert(document.domain)>"
    body = {"first_name": payload, "last_name": "Doe", "address_line1": payload}
    headers = clinic.owner.headers

    first = await client.post("/api/v1/customers", json=body, headers=headers)
    assert first.status_code == 201, first.text
    since = await horizon(superuser_engine)
    nothing = await client.get("/api/v1/customers", headers=headers)
    assert nothing.status_code == 200, nothing.text
    assert await stored_as_given(superuser_engine, payload, since=since) == []
    assert await stored_as_given(superuser_engine, payload, since=0) == ["customers"]

    since = await horizon(superuser_engine)
    sealed_only = {"first_name": "Ann", "last_name": "Doe", "address_line1": payload}
    second = await client.post("/api/v1/customers", json=sealed_only, headers=headers)
    assert second.status_code == 201, second.text
    assert await stored_as_given(superuser_engine, payload, since=since) == ["customers"]
