"""SQL injection through every string query parameter of every list route.

Routes and parameters come from the OpenAPI document. Each payload goes, alone, into one
parameter, as a clinic's owner (so the request gets past authentication to the query); a
parameter with a ``pattern`` (an opaque cursor) also gets the payloads wrapped the way cursors
are. For every answer: no 5xx, no database error text, nothing of another clinic; boolean-blind
pairs answer alike; ``pg_sleep`` does not delay the answer; and afterwards every table is still
there with the same number of rows.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from app.auth.models import Role
from fixtures.factories import (
    AppointmentFactory,
    CustomerFactory,
    MedicalRecordFactory,
    PetFactory,
    RoomFactory,
)
from tests.harness.world import ClinicWorld, World
from tests.security.surface import Operation, census, list_routes, string_query_parameters

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

LIST_ROUTES = list_routes()


def _encoded(payload: str) -> list[str]:
    """The payload inside opaque tokens (cursors): base64url JSON lists, as the pattern allows."""
    return [
        base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")
        for values in ([payload], [payload, payload])
    ]


async def _clinic_with_data(world: World) -> tuple[ClinicWorld, set[str]]:
    """A clinic with a row of everything listed; returns it and the ids of its rows."""
    clinic = await world.clinic()
    vet = clinic.actors[Role.vet].user
    customer = await world.make(clinic, CustomerFactory)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    room = await world.make(clinic, RoomFactory, location_id=clinic.setup.location.id)
    appointment = await world.make(clinic, AppointmentFactory, pet_id=pet.id, vet_id=vet.id)
    record = await world.make(clinic, MedicalRecordFactory, pet_id=pet.id, author_id=vet.id)
    rows = [clinic.setup.location, customer, pet, room, appointment, record]
    ids = {str(row.id) for row in rows} | {str(user.id) for user in clinic.setup.staff.values()}
    return clinic, ids


def _problems(label: str, payload: str, response: httpx.Response, foreign: set[str]) -> list[str]:
    where = f"{label} {payload!r}: {response.status_code}"
    found = []
    if response.status_code >= 500:
        found.append(f"{where}: server error {response.text[:300]}")
    body = response.text.lower()
    leaked = [marker for marker in SQL_ERROR_TEXT if marker in body]
    if leaked:
        found.append(f"{where}: database error text {leaked} in {response.text[:300]}")
    if any(row_id in response.text for row_id in foreign):
        found.append(f"{where}: another clinic's rows in the answer")
    if response.status_code not in (200, 422):
        found.append(f"{where}: expected 200 or a 422 problem, got {response.text[:300]}")
    return found


@pytest.mark.parametrize("route", LIST_ROUTES, ids=[op.path for op in LIST_ROUTES])
async def test_injection_in_query_parameters_changes_nothing(
    client: httpx.AsyncClient, world: World, superuser_engine, route: Operation
) -> None:
    parameters = string_query_parameters(route)
    patterned = string_query_parameters(route, with_pattern=True)
    assert parameters, f"{route.label} has no string query parameter"
    clinic, _ = await _clinic_with_data(world)
    _, foreign = await _clinic_with_data(world)
    headers = clinic.owner.headers
    before = await census(superuser_engine)

    async def send(name: str, payload: str) -> httpx.Response:
        return await client.get(route.path, params={name: payload}, headers=headers)

    problems: list[str] = []
    for name in parameters:
        label = f"{route.path}?{name}="
        for payload in TAUTOLOGIES + STACKED + UNION_AND_ERRORS:
            problems += _problems(label, payload, await send(name, payload), foreign)
        for true, false in BOOLEAN_BLIND:
            yes, no = await send(name, true), await send(name, false)
            problems += _problems(label, true, yes, foreign) + _problems(label, false, no, foreign)
            if (yes.status_code, yes.json()) != (no.status_code, no.json()):
                problems.append(f"{label} {true!r} and {false!r} answer differently")
        if name in patterned:
            for payload in TAUTOLOGIES + STACKED + UNION_AND_ERRORS + TIME_BASED:
                for token in _encoded(payload):
                    problems += _problems(label, token, await send(name, token), foreign)
        for payload in TIME_BASED:
            started = time.perf_counter()
            response = await send(name, payload)
            elapsed = time.perf_counter() - started
            problems += _problems(label, payload, response, foreign)
            if elapsed >= SLEEP_SECONDS - 1:
                problems.append(f"{label} {payload!r} took {elapsed:.1f}s: pg_sleep ran")

    after = await census(superuser_engine)
    assert not problems, "\n".join(problems)
    assert "pets" in before, "the census sees the application's tables"
    assert after == before, "tables or row counts changed during the attack"
