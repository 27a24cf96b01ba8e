"""Fields the server owns can never be set by a client, on any create or update.

Generated over the request schemas of the route table: no schema declares a server-owned field
(except the reviewed cases in ``DECLARED``), and every route with a body rejects each one
(422 problem+json naming it) and changes nothing, while its plain example body succeeds.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import tally
from tests.harness.world import World
from tests.security.catalogue import (
    ATTACKED,
    ID_KINDS,
    body_for,
    credentials,
    explain,
    problem,
    send,
)
from tests.security.estate import Estate, fresh, rows_of
from tests.security.surface import census, resolve

NEVER_SET: dict[str, Any] = {
    "id": "01900000-0000-7000-8000-000000000000",
    "tenant_id": None,  # filled in with another clinic's id
    "clinic_id": None,
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
    "author_id": "01900000-0000-7000-8000-000000000001",
    "signed_by": "01900000-0000-7000-8000-000000000001",
    "signed_at": "2020-01-01T00:00:00Z",
    "locks_at": "2999-01-01T00:00:00Z",
    "locked": False,
    "role": "owner",
    "user_id": "01900000-0000-7000-8000-000000000001",
    "invited_by": "01900000-0000-7000-8000-000000000001",
    "password_hash": "$argon2id$forged",
    # pragma: allowlist nextline secret - a forged value the API must ignore
    "secret_hash": "forged",
    "revoked_at": None,
    "accepted_at": "2020-01-01T00:00:00Z",
    "expires_at": "2999-01-01T00:00:00Z",
}
"""Server-owned fields, each with the value an attacker would send."""

DECLARED: dict[tuple[str, str], str] = {
    ("LoginIn", "clinic_id"): "which of the caller's own clinics to log in to (membership checked)",
    ("SwitchClinicIn", "clinic_id"): "which of the caller's own clinics to act in next",
    ("InvitationIn", "role"): "the role offered to someone else; only an owner may offer owner",
    ("StaffPatch", "role"): "another member's role; nobody changes their own (test_staff)",
}
"""Schemas that declare a server-owned name on purpose, and why that is safe."""

WITH_BODY = [route for route in ATTACKED if route.body_schema]
SCHEMAS = sorted({str(route.body_schema) for route in WITH_BODY})


def _properties(schema: str) -> set[str]:
    return set(resolve({"$ref": f"#/components/schemas/{schema}"}).get("properties", {}))


def _forbidden(schema: str) -> list[str]:
    return sorted(field for field in NEVER_SET if (schema, field) not in DECLARED)


tally.size(
    "mass assignment",
    f"{len(WITH_BODY)} routes with a body x their forbidden fields ="
    f" {sum(len(_forbidden(str(r.body_schema))) for r in WITH_BODY)} requests",
)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_no_request_schema_declares_a_server_owned_field(schema: str) -> None:
    declared = _properties(schema) & set(_forbidden(schema))
    assert not declared, f"{schema} lets clients set {sorted(declared)}"


@pytest.mark.parametrize("route", WITH_BODY, ids=lambda r: r.label)
async def test_server_owned_fields_are_rejected_and_change_nothing(
    client: httpx.AsyncClient, world: World, superuser_engine, estates: tuple[Estate, Estate], route
) -> None:
    estate, theirs = estates
    clinic, other = estate.clinic, theirs.clinic
    actor = None if route.public else clinic.owner
    url = route.url(
        {ID_KINDS[name]: await fresh(world, clinic, ID_KINDS[name]) for name in route.path_params}
    )
    caller = await credentials(world, actor, route)
    before = await census(superuser_engine), await rows_of(superuser_engine, clinic.id)

    failures = []
    for field in _forbidden(str(route.body_schema)):
        value = NEVER_SET[field] if NEVER_SET[field] is not None else str(other.id)
        response = await send(client, caller, route, url, {**route.body(estate), field: value})
        named = [error.get("loc", [])[-1:] for error in problem(response).get("errors", [])]
        if response.status_code != 422 or [field] not in named:
            failures.append(f"{field}: {explain(response)}")

    assert not failures, f"{route.label}:\n" + "\n".join(failures)
    assert (await census(superuser_engine), await rows_of(superuser_engine, clinic.id)) == before
    plain = await send(client, caller, route, url, await body_for(world, actor, route, estate))
    assert plain.is_success, f"the example body alone: {explain(plain)}"
