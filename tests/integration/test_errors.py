"""Every error is RFC 9457 problem+json with a stable type, whatever went wrong."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import text

from app.auth.models import Role
from fixtures.factories import CustomerFactory
from tests.harness.api import PROBLEM_JSON, assert_problem
from tests.harness.plugin import asgi_client


def assert_invalid(response, *locs: list) -> dict:
    body = assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in body["errors"]] == list(locs)
    for error in body["errors"]:
        assert error["msg"]
        assert error["type"]
    return body


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def customer(**overrides: object) -> dict:
    return {"first_name": "Ana", "last_name": "Silva", **overrides}


async def customers_in_db(engine) -> int:
    async with engine.connect() as connection:
        return await connection.scalar(text("SELECT count(*) FROM customers"))


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here", "/api/v2/customers", "/api/v1/customers/x/y", "/no-such-page"]
)
async def test_unknown_route_is_404(client, path):
    body = assert_problem(await client.get(path), 404, "not-found")

    assert body["instance"] == path


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/customers", "GET, POST"),
        ("DELETE", "/api/v1/customers", "GET, POST"),
        ("POST", "/api/v1/clinics/current", "GET, PATCH"),
        ("PUT", "/api/v1/pets/01900000-0000-7000-8000-000000000000", "DELETE, GET, PATCH"),
    ],
)
async def test_wrong_method_is_405_naming_every_method_of_the_path(
    client, world, method, path, allowed
):
    clinic = await world.clinic()

    response = await client.request(method, path, headers=clinic.owner.headers)

    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    "content", [b'{"first_name": "Ana",', b"not json", b"{'single': 'quotes'}", b"\xff\xfe"]
)
async def test_malformed_json_is_422_not_400(client, world, superuser_engine, content):
    clinic = await world.clinic()

    response = await client.post(
        "/api/v1/customers",
        content=content,
        headers={**clinic.owner.headers, "content-type": "application/json"},
    )

    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["loc"][0] == "body"
    assert await customers_in_db(superuser_engine) == 0


async def test_a_missing_body_is_422(client, world):
    clinic = await world.clinic()

    response = await client.post("/api/v1/customers", headers=clinic.owner.headers)

    assert_invalid(response, ["body"])


@pytest.mark.parametrize("value", [False, True, "30", 30.5])
async def test_an_integer_field_takes_only_integers(client, world, value):
    clinic = await world.clinic()

    response = await client.post(
        "/api/v1/appointment-types",
        json={"name": "Consultation", "default_duration_minutes": value},
        headers=clinic.owner.headers,
    )

    assert_invalid(response, ["body", "default_duration_minutes"])
    listed = await client.get("/api/v1/appointment-types", headers=clinic.owner.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("first_name", 123), ("last_name", 1.5), ("email", 42), ("phone", 351912345678)],
)
async def test_a_number_for_a_string_field_is_422(client, world, superuser_engine, field, value):
    clinic = await world.clinic()

    response = await client.post(
        "/api/v1/customers", json=customer(**{field: value}), headers=clinic.owner.headers
    )

    assert_invalid(response, ["body", field])
    assert await customers_in_db(superuser_engine) == 0


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
async def test_a_boolean_field_takes_only_booleans(client, world, value):
    clinic = await world.clinic()
    created = await world.make(clinic, CustomerFactory)

    response = await client.patch(
        f"/api/v1/customers/{created.id}",
        json={"consents": {"email": value}},
        headers=clinic.owner.headers,
    )

    assert_invalid(response, ["body", "consents", "email"])


@pytest.mark.parametrize(
    "body",
    [
        customer(nickname="Aninhas"),
        customer(tenant_id="01900000-0000-7000-8000-000000000000"),
        customer(id="01900000-0000-7000-8000-000000000000"),
        customer(consents={"email": True, "carrier_pigeon": True}),
    ],
)
async def test_an_unknown_body_field_is_422(client, world, superuser_engine, body):
    clinic = await world.clinic()

    response = await client.post("/api/v1/customers", json=body, headers=clinic.owner.headers)

    errors = assert_problem(response, 422, "validation-error")["errors"]
    assert [e["type"] for e in errors] == ["extra_forbidden"]
    assert errors[0]["loc"][0] == "body"
    assert await customers_in_db(superuser_engine) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/customers/not-a-uuid"),
        ("DELETE", "/api/v1/customers/123"),
        ("GET", "/api/v1/pets/01900000-0000-7000-8000-00000000000Z"),
        ("GET", "/api/v1/locations/%27%20OR%201=1--"),
    ],
)
async def test_a_non_uuid_path_id_is_422(client, world, method, path):
    clinic = await world.clinic()

    response = await client.request(method, path, headers=clinic.owner.headers)

    body = assert_problem(response, 422, "validation-error")
    assert [e["loc"][0] for e in body["errors"]] == ["path"]


@pytest.mark.parametrize(
    "path", ["/api/v1/customers", "/api/v1/pets", "/api/v1/staff", "/api/v1/clinics/current"]
)
async def test_missing_credentials_are_401_with_a_challenge(client, path):
    response = await client.get(path)

    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer vtk_" + "0" * 32 + "_" + "a" * 43,
        "Bearer vtk_not-a-clinic_" + "a" * 43,
        "Bearer vts_" + "0" * 32 + "_" + "a" * 43,
        "Basic dXNlcjpwYXNz",
    ],
)
async def test_a_bad_credential_is_401(client, world, authorization):
    await world.clinic()

    response = await client.get("/api/v1/customers", headers={"Authorization": authorization})

    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_token_of_another_kind_is_401(client, world):
    """A real API token's secret presented as a session cookie does not authenticate."""
    clinic = await world.clinic()
    token = clinic.owner.token

    client.cookies.set("vetify_session", token, domain="testserver")
    response = await client.get("/api/v1/customers")
    client.cookies.clear()

    assert_problem(response, 401, "unauthenticated")


@pytest.mark.parametrize("limit", ["0", "-1", "201", "1000", "ten", "1.5"])
@pytest.mark.parametrize("path", ["/api/v1/customers", "/api/v1/pets", "/api/v1/staff"])
async def test_an_out_of_range_limit_is_422(client, world, path, limit):
    clinic = await world.clinic()

    response = await client.get(path, params={"limit": limit}, headers=clinic.owner.headers)

    assert_invalid(response, ["query", "limit"])


@pytest.mark.parametrize("limit", ["1", "200"])
async def test_the_limit_bounds_are_accepted(client, world, limit):
    clinic = await world.clinic()

    response = await client.get(
        "/api/v1/customers", params={"limit": limit}, headers=clinic.owner.headers
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        cursor_of(["not-a-uuid"]),
        cursor_of(["01900000-0000-7000-8000-000000000000", "extra"]),
        cursor_of({"id": "01900000-0000-7000-8000-000000000000"}),
        cursor_of([]),
        cursor_of("01900000-0000-7000-8000-000000000000"),
        cursor_of([None]),
        cursor_of([12345]),
        cursor_of([True]),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/customers", "/api/v1/pets", "/api/v1/staff"])
async def test_a_forged_cursor_is_422(client, world, path, cursor):
    clinic = await world.clinic()

    response = await client.get(path, params={"cursor": cursor}, headers=clinic.owner.headers)

    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("cursor", ["has space", "a+b/c=", "x" * 201])
async def test_a_cursor_outside_the_alphabet_is_422(client, world, cursor):
    clinic = await world.clinic()

    response = await client.get(
        "/api/v1/customers", params={"cursor": cursor}, headers=clinic.owner.headers
    )

    assert_invalid(response, ["query", "cursor"])


async def test_a_nul_character_in_text_is_a_422_not_a_database_error(client, world):
    clinic = await world.clinic(roles=())
    response = await client.post(
        "/api/v1/customers",
        json={"first_name": "Ana\u0000", "last_name": "Silva"},
        headers=clinic.owner.headers,
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON


async def test_a_drained_connection_pool_is_a_503_with_retry_after_then_recovers(
    configured_app, world
):
    """Every pooled connection busy for the pool's whole timeout: load to shed (503), never a
    500 (issue 15, defect 5: ``QueuePool limit ... reached`` escaped as a 500)."""
    clinic = await world.clinic()
    pool = {"db_pool_size": 1, "db_max_overflow": 0, "db_connect_timeout_seconds": 0.3}
    async with configured_app(**pool) as app, asgi_client(app) as http:
        async with app.state.engine.connect() as held:  # the only connection, held
            await held.execute(text("SELECT 1"))
            busy = await http.get("/api/v1/pets", headers=clinic.owner.headers)
        after = await http.get("/api/v1/pets", headers=clinic.owner.headers)
    assert_problem(busy, 503, "database-busy")
    assert busy.headers["Retry-After"] == "1"
    assert after.status_code == 200


async def test_a_pooled_connection_the_server_ended_is_replaced_before_a_request_uses_it(
    configured_app, world, superuser_engine
):
    """Each pooled connection is checked before use (issue 16, defect 4: one round trip within
    VETIFY_DB_PING_TIMEOUT_SECONDS, instead of SQLAlchemy's pre-ping): one the server ended
    while it sat in the pool (an administrator, a restart, an idle timeout) is replaced, and
    the request never sees it."""
    clinic = await world.clinic()
    async with configured_app(db_pool_size=1, db_max_overflow=0) as app, asgi_client(app) as http:
        first = await http.get("/api/v1/pets", headers=clinic.owner.headers)
        async with superuser_engine.begin() as admin:
            ended = await admin.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'vetify' AND datname = current_database()"
                )
            )
        second = await http.get("/api/v1/pets", headers=clinic.owner.headers)
    assert first.status_code == 200
    assert ended == 1
    assert second.status_code == 200, second.text


@pytest.mark.parametrize(
    ("sqlstate", "what"), [("40P01", "deadlock"), ("40001", "serialization failure")]
)
async def test_a_transaction_the_database_undid_for_another_is_a_409_that_keeps_nothing(
    client, world, superuser_engine, sqlstate, what
):
    """Two bookings of one slot, each waiting on the other's row, end in a deadlock the
    database breaks by undoing one of them (seen in CI): its client is told to send it again,
    never a 500. Here the database is made to undo every new customer the same way."""
    clinic = await world.clinic(roles=(Role.receptionist,))
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION undo_customer() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN RAISE EXCEPTION 'injected {what}' USING ERRCODE = '{sqlstate}'; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER undo_customer BEFORE INSERT ON customers"
                " FOR EACH ROW EXECUTE FUNCTION undo_customer()"
            )
        )
    before = await _counts(superuser_engine, clinic.id)

    answer = await client.post(
        "/api/v1/customers",
        json={"first_name": "Ana", "last_name": "Race"},
        headers=clinic.actors[Role.receptionist].headers,
    )

    assert_problem(answer, 409, "concurrent-change")
    assert "Send it again" in answer.json()["detail"]
    assert await _counts(superuser_engine, clinic.id) == before


async def _counts(engine, clinic_id) -> tuple[int, int]:
    async with engine.connect() as connection:
        found = await connection.execute(
            text(
                "SELECT (SELECT count(*) FROM customers WHERE tenant_id = :c),"
                " (SELECT count(*) FROM audit_events WHERE tenant_id = :c)"
            ),
            {"c": clinic_id},
        )
        customers, events = found.one()
    return customers, events
