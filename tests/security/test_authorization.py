"""Every route, for every role, is allowed or refused exactly as the reviewed table of who may
do what says (``tests/security/who_may.toml``).

The table is written from what each role is in a clinic, apart from the code: the expectations
do not come from the routes' own ``requires(Action.x)`` nor from
``app.auth.permissions.PERMISSIONS``, so a route guarded by the wrong permission fails here.
The routes come from the app's route table: one missing from the table fails, as does a line
of the table for a route the app does not serve. An allowed request succeeds, and a write that
changed the clinic's data left its events in the clinic's audit trail under the route's action
(ADR 0027); a refused one is a 403 problem+json and leaves the clinic's data as it was. Public
routes are listed with reasons in :data:`tests.security.surface.PUBLIC` and as ``anyone`` in the
table.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.auth.models import Role
from app.kit.context import REQUEST_ID_HEADER
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
from tests.security.estate import Estate, fresh, rows_of
from tests.security.surface import TRAIL, outside_the_trail

AUTHORIZED = [route for route in ATTACKED if not route.public]
OUTSIDE_THE_TRAIL = {
    **dict.fromkeys(TRAIL, "the trail itself"),
    "credentials": "sessions and tokens: security events, not rows of the trail (ADR 0027)",
    "users": "not a clinic's: a user's changes are security events (ADR 0027)",
    "data_keys": "keys, made once per scope on a connection of their own (ADR 0028)",
}
READS_AUDITED = frozenset(
    {
        "GET /api/v1/medical-records/{record_id}",
        "GET /api/v1/attachments/{attachment_id}/content",
        "GET /api/v1/client-exports/{export_id}/content",
        "GET /api/v1/clinic-exports/{clinic_export_id}/content",
        "GET /api/v1/audit-events/export",
    }
)
"""Reads the trail records (opening a record, taking a file, taking a client's or the whole
clinic's export or the trail itself away);
every other read records nothing."""
DERIVED = frozenset({"auth_epoch"})
"""Columns the database moves by trigger when something else changed (migration 0008)."""


def audited_changes(before: dict[str, list[str]], after: dict[str, list[str]]) -> set[str]:
    """The tables of the clinic's data whose rows a request changed, but for those whose
    changes are not in the trail, and the columns the database derives."""

    def kept(rows: list[str]) -> list[dict]:
        return [{k: v for k, v in json.loads(row).items() if k not in DERIVED} for row in rows]

    return {
        table
        for table in before.keys() | after.keys()
        if table not in OUTSIDE_THE_TRAIL
        and kept(before.get(table, [])) != kept(after.get(table, []))
    }


FORBIDDEN = problem_type("forbidden")
ANYONE = "anyone"


async def audited(engine, clinic_id: uuid.UUID, response: httpx.Response) -> list[tuple[str, str]]:
    """The clinic's audit events of the request ``response`` answers: (action, change) each."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT action, change FROM audit_events WHERE tenant_id = :c AND request_id = :r"
                " ORDER BY seq"
            ),
            {"c": clinic_id, "r": response.headers[REQUEST_ID_HEADER]},
        )
        return [(row.action, row.change) for row in rows]


def who_may(section: str = "operations") -> dict[str, frozenset[Role] | str]:
    """The reviewed table (its API ``operations`` or its ``pages``): ``METHOD path`` -> the
    roles that may call it, or ``anyone``."""
    table = tomllib.loads((Path(__file__).parent / "who_may.toml").read_text(encoding="utf-8"))
    groups = {
        name: frozenset(Role(role) for role in roles) for name, roles in table["groups"].items()
    }
    return {
        operation: ANYONE if who == ANYONE else groups[who]
        for operation, who in table[section].items()
    }


WHO_MAY = who_may()


def _roles(route: Route) -> frozenset[Role]:
    allowed = WHO_MAY.get(route.label)
    assert isinstance(allowed, frozenset), f"{route.label}: {allowed} in who_may.toml"
    return allowed


tally.size(
    "authorization matrix",
    f"{len(AUTHORIZED)} routes x {len(Role)} roles = {len(AUTHORIZED) * len(Role)} requests"
    f" ({sum(len(Role) - len(_roles(r)) for r in AUTHORIZED if r.label in WHO_MAY)} refused),"
    " expected from tests/security/who_may.toml",
)


def test_the_table_names_every_route_and_only_routes_the_app_serves() -> None:
    served = {route.label for route in ATTACKED}
    assert sorted(served - WHO_MAY.keys()) == [], "routes missing from who_may.toml"
    assert sorted(WHO_MAY.keys() - served) == [], "who_may.toml names routes the app lacks"


def test_only_the_public_routes_are_open_to_anyone() -> None:
    open_to_anyone = {label for label, who in WHO_MAY.items() if who == ANYONE}
    assert open_to_anyone == {route.label for route in ATTACKED if route.public}


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
async def test_route_obeys_who_may_do_what(
    client: httpx.AsyncClient,
    world: World,
    superuser_engine,
    estates: tuple[Estate, Estate],
    route: Route,
) -> None:
    assert route.action is not None, f"{route.label} is not mapped to an action"
    allowed = _roles(route)
    estate, _ = estates
    clinic = estate.clinic

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
        if role in allowed:
            if not response.is_success:
                failures.append(f"{role} may, but got {explain(response)} ({route.action})")
            elif route.method in SAFE:
                recorded = await audited(superuser_engine, clinic.id, response)
                opened = [(route.action.value, "read")] if route.label in READS_AUDITED else []
                if recorded != opened:
                    failures.append(f"{role}: the audit trail says {recorded}, not {opened}")
            else:
                changed = audited_changes(before, await rows_of(superuser_engine, clinic.id))
                recorded = await audited(superuser_engine, clinic.id, response)
                if (changed and not recorded) or any(
                    action != route.action.value for action, _ in recorded
                ):
                    failures.append(
                        f"{role}: changed {sorted(changed)}, the audit trail says {recorded}"
                        f" ({route.action})"
                    )
        elif response.status_code != 403 or problem(response).get("type") != FORBIDDEN:
            failures.append(f"{role} may not, but got {explain(response)} ({route.action})")
        else:
            after = await rows_of(superuser_engine, clinic.id)
            if outside_the_trail(after) != outside_the_trail(before):
                failures.append(f"{role}: the refused request changed the clinic's data")
            refusal = [(route.action.value, "security")]  # permission_denied (app/audit/security)
            if (recorded := await audited(superuser_engine, clinic.id, response)) != refusal:
                failures.append(f"{role}: the audit trail says {recorded}, not {refusal}")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
