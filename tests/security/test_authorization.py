"""Every route, for every role, is allowed or refused exactly as the permission table says.

Generated from the route table (each route's ``requires(Action.x)``) and from
``app.auth.permissions.PERMISSIONS``: an allowed request succeeds, a refused one is a 403
problem+json and leaves the clinic's data as it was. A route with no action fails the suite
(see test_tenant_routes.test_every_route_is_classified); public routes are listed with reasons
in :data:`tests.security.surface.PUBLIC`.
"""

from __future__ import annotations

import httpx
import pytest

from app.auth.models import Role
from app.auth.permissions import allows
from tests.harness import tally
from tests.harness.api import problem_type
from tests.harness.world import World
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    Route,
    body_for,
    credentials,
    explain,
    problem,
    send,
)
from tests.security.estate import fresh, furnish, rows_of

AUTHORIZED = [route for route in ATTACKED if not route.public]
FORBIDDEN = problem_type("forbidden")

tally.size(
    "authorization matrix",
    f"{len(AUTHORIZED)} routes x {len(Role)} roles = {len(AUTHORIZED) * len(Role)} requests"
    f" ({sum(not allows(role, r.action) for r in AUTHORIZED for role in Role if r.action)}"
    " refused)",
)


SAFE = {"GET", "HEAD"}


def test_no_write_is_guarded_by_a_read_permission() -> None:
    """The route -> action map is reviewed in docs/openapi.json (``x-permission``); this catches
    the slip a review might miss. (A read may need more than ``:read``: invitations do.)"""
    wrong = [
        f"{route.label} requires only {route.action}"
        for route in AUTHORIZED
        if route.method not in SAFE and str(route.action).endswith(":read")
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("route", AUTHORIZED, ids=lambda r: r.label)
async def test_route_obeys_the_permission_table(
    client: httpx.AsyncClient, world: World, superuser_engine, route: Route
) -> None:
    assert route.action is not None, f"{route.label} is not mapped to an action"
    clinic = await world.clinic()
    estate = await furnish(world, clinic)

    failures = []
    for role in Role:
        actor = clinic.actors[role]
        ids = {
            ID_KINDS[name]: await fresh(world, clinic, ID_KINDS[name], actor)
            for name in route.path_params
        }
        caller = await credentials(world, actor, route)
        before = await rows_of(superuser_engine, clinic.id)
        body = await body_for(world, actor, route, estate)
        response = await send(client, caller, route, route.url(ids), body)
        if allows(role, route.action):
            if not response.is_success:
                failures.append(f"{role} may {route.action} but got {explain(response)}")
        elif response.status_code != 403 or problem(response).get("type") != FORBIDDEN:
            failures.append(f"{role} may not {route.action} but got {explain(response)}")
        elif await rows_of(superuser_engine, clinic.id) != before:
            failures.append(f"{role}: the refused request changed the clinic's data")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
