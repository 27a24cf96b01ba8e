"""Clinic A's owner, the most privileged caller, attacks clinic B through every route.

Generated from the route table (:mod:`tests.security.catalogue`), so a new route is attacked
without anyone listing it, and a route the suite cannot attack fails it by name:

* by id: every route with a path parameter, on B's resource, answers exactly as for a missing
  id (404 problem+json, same body) and leaves B's data byte for byte as it was, while the
  same request on A's own resource succeeds (so the 404 is the wall, not a bad request);
* reads: every GET shows A's data and none of B's ids, also when the request names B's clinic
  in the query or a header, or filters by one of B's ids;
* references: every id a body can carry, set to B's resource, is refused (404/422) and writes
  nothing, while the same body with A's id succeeds.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends

from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.kit.ids import new_id
from tests.contract.snapshot import offline_app
from tests.harness import tally
from tests.harness.api import shared_part
from tests.harness.world import World
from tests.security.catalogue import (
    ATTACKED,
    HOW_TO_FIX,
    ID_KINDS,
    ROUTES,
    STEERING_HEADERS,
    Route,
    credentials,
    explain,
    problem,
    routes,
    send,
)
from tests.security.estate import Estate, fresh, ids_of, rows_of
from tests.security.surface import census, outside_the_trail

BY_ID = [route for route in ATTACKED if route.path_params]
READS = [route for route in ATTACKED if route.method == "GET"]
REFERENCES = [(route, field) for route in ATTACKED for field in route.body_ids]
# How a route refuses another clinic's id in its body, where not as a missing one (404) or an
# invalid field (422): log-in answers a clinic one is not in like a wrong password, so that
# no answer tells a right password from a wrong one (issue 15, defect 7).
REFUSED_AS = {("POST", "/api/v1/auth/login"): {401}}
_Reader = Annotated[Principal, Depends(requires(Action.pets_read))]


def _steering(route: Route, theirs: Estate) -> dict[str, dict[str, Any]]:
    """Ways a read may try to reach clinic B: name -> extra request arguments."""
    clinic = str(theirs["clinic"])
    ways: dict[str, dict[str, Any]] = {
        "plain": {},
        "their clinic in the query": {"params": {"tenant_id": clinic, "clinic_id": clinic}},
        "their clinic in headers": {"headers": dict.fromkeys(STEERING_HEADERS, clinic)},
    }
    for name in route.query_ids:
        ways[f"filter {name}=theirs"] = {"params": {name: str(theirs[ID_KINDS[name]])}}
    return ways


tally.size(
    "tenancy route matrix",
    f"{len(BY_ID)} routes by id x 3 requests (theirs, missing, ours)"
    f" + {len(READS)} reads in {sum(3 + len(r.query_ids) for r in READS)} steering requests"
    f" + {len(REFERENCES)} body references x 2 requests"
    f" = {3 * len(BY_ID) + sum(3 + len(r.query_ids) for r in READS) + 2 * len(REFERENCES)}"
    f" requests over {len(ATTACKED)} of {len(ROUTES)} routes",
)


def _without_instance(body: dict[str, Any]) -> dict[str, Any]:
    """A problem's body but for what each request has of its own: its path and its id."""
    return {key: value for key, value in shared_part(body).items() if key != "instance"}


async def _ids(world: World, estate: Estate, route: Route) -> dict[str, uuid.UUID]:
    """Fresh resources of the estate's clinic for the route's path parameters."""
    owner = estate.clinic.owner
    return {
        ID_KINDS[name]: await fresh(world, estate.clinic, ID_KINDS[name], owner)
        for name in route.path_params
    }


# -- the route table -------------------------------------------------------------------------------
def test_every_route_is_classified() -> None:
    problems = [found for route in ROUTES for found in route.problems()]
    assert not problems, "\n".join(problems)


def test_a_route_the_suites_cannot_attack_is_named() -> None:
    app = offline_app()
    router = APIRouter()

    @router.get("/api/v1/widgets/{widget_id}")
    async def get_widget(widget_id: uuid.UUID, caller: _Reader) -> dict[str, str]:
        raise NotImplementedError

    @router.get("/api/v1/gadgets")
    async def list_gadgets() -> list[str]:
        raise NotImplementedError

    app.include_router(router)
    problems = [found for route in routes(app) for found in route.problems()]

    assert problems == [
        "GET /api/v1/widgets/{widget_id} has path parameter 'widget_id', and no factory makes"
        f" its resource; {HOW_TO_FIX}",
        "GET /api/v1/gadgets declares no action (Depends(requires(Action.x))) and is not public;"
        f" {HOW_TO_FIX}",
    ]


# -- by id -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", BY_ID, ids=lambda r: r.label)
async def test_another_clinics_resource_is_not_found_and_unchanged(
    client: httpx.AsyncClient, world: World, superuser_engine, estates, route: Route
) -> None:
    assert not route.problems()
    ours, theirs = estates
    attacker = await credentials(world, ours.clinic.owner, route)
    their_ids = await _ids(world, theirs, route)
    missing = {ID_KINDS[name]: new_id() for name in route.path_params}
    before = await rows_of(superuser_engine, theirs.clinic.id)

    attack = await send(client, attacker, route, route.url(their_ids), route.body(ours))
    absent = await send(client, attacker, route, route.url(missing), route.body(ours))

    assert attack.status_code == 404, explain(attack)
    assert problem(attack), explain(attack)
    # Exactly as a missing id: nothing tells the caller the resource exists elsewhere.
    assert _without_instance(attack.json()) == _without_instance(absent.json())
    assert await rows_of(superuser_engine, theirs.clinic.id) == before
    own_url = route.url(await _ids(world, ours, route))
    own = await send(
        client, await credentials(world, ours.clinic.owner, route), route, own_url, route.body(ours)
    )
    assert own.is_success, f"the same request on our own resource: {explain(own)}"


# -- reads -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("route", READS, ids=lambda r: r.label)
async def test_reads_show_nothing_of_another_clinic(
    client: httpx.AsyncClient, world: World, superuser_engine, estates, route: Route
) -> None:
    assert not route.problems()
    ours, theirs = estates
    their_ids = await ids_of(superuser_engine, theirs.clinic.id)
    our_ids = await ids_of(superuser_engine, ours.clinic.id)
    caller = await credentials(world, ours.clinic.owner, route)

    failures = []
    for way, extra in _steering(route, theirs).items():
        url = route.url(await _ids(world, ours, route) if route.single_use else ours.ids)
        response = await send(client, caller, route, url, None, **extra)
        leaked = sorted(i for i in their_ids if i in response.text)
        if response.status_code != 200 or leaked:
            failures.append(f"{way}: {explain(response)} leaked {leaked}")
        elif way == "plain" and not any(i in response.text for i in our_ids):
            failures.append(f"{way}: shows none of our own data, so proves nothing")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)


# -- references in bodies --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "field"), REFERENCES, ids=[f"{r.label} {f}" for r, f in REFERENCES]
)
async def test_a_reference_to_another_clinics_resource_is_refused(
    client: httpx.AsyncClient,
    world: World,
    superuser_engine,
    estates,
    route: Route,
    field: str,
) -> None:
    assert not route.problems()
    ours, theirs = estates
    attacker = await credentials(world, None if route.public else ours.clinic.owner, route)
    body = route.body(ours)
    assert body is not None
    assert field in body, f"{route.label}: the example {route.body_schema} never sets {field}"
    url = route.url(await _ids(world, ours, route))
    before = [
        outside_the_trail(await census(superuser_engine)),
        outside_the_trail(await rows_of(superuser_engine, ours.clinic.id)),
        outside_the_trail(await rows_of(superuser_engine, theirs.clinic.id)),
    ]

    attack = await send(client, attacker, route, url, {**body, field: str(theirs[ID_KINDS[field]])})

    assert attack.status_code in REFUSED_AS.get(route.key, {404, 422}), explain(attack)
    assert problem(attack), explain(attack)
    # Nothing changed but a refusal's security event (a log-in into their clinic is refused).
    assert [
        outside_the_trail(await census(superuser_engine)),
        outside_the_trail(await rows_of(superuser_engine, ours.clinic.id)),
        outside_the_trail(await rows_of(superuser_engine, theirs.clinic.id)),
    ] == before
    own = await send(client, attacker, route, url, body)
    assert own.is_success, f"the same body with our own {field}: {explain(own)}"
