"""The clinic itself, its locations and rooms over HTTP."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from app.auth.models import Role
from fixtures.factories import RoomFactory
from tests.harness.api import assert_problem

MISSING_ID = "01900000-0000-7000-8000-000000000000"
CLINIC = "/api/v1/clinics/current"
LOCATIONS = "/api/v1/locations"
ROOMS = "/api/v1/rooms"


async def stored(engine, table: str, row_id) -> dict | None:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id}
        )
        row = result.mappings().one_or_none()
    return dict(row) if row else None


def without(body: dict, *keys: str) -> dict:
    return {k: v for k, v in body.items() if k not in keys}


# -- the clinic ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", list(Role))
async def test_current_clinic_is_the_callers(client, world, role):
    clinic = await world.clinic(name="Clínica Veterinária do Porto", timezone="Europe/Lisbon")
    await world.clinic(name="Another clinic")

    response = await client.get(CLINIC, headers=clinic.actors[role].headers)

    assert response.status_code == 200
    assert without(response.json(), "created_at") == {
        "id": str(clinic.id),
        "name": "Clínica Veterinária do Porto",
        "timezone": "Europe/Lisbon",
        "require_mfa": False,
        "inactive_client_years": 7,
        "country": None,
        "record_retention_years": None,
    }


@pytest.mark.parametrize("role", [Role.owner, Role.admin])
async def test_managers_rename_the_clinic_and_change_its_timezone(
    client, world, superuser_engine, role
):
    clinic = await world.clinic(name="Old name", timezone="Europe/Lisbon")
    headers = clinic.actors[role].headers

    renamed = await client.patch(CLINIC, json={"name": "  New name  "}, headers=headers)
    moved = await client.patch(CLINIC, json={"timezone": "America/Sao_Paulo"}, headers=headers)

    assert renamed.status_code == 200
    assert renamed.json()["name"] == "New name"
    assert renamed.json()["timezone"] == "Europe/Lisbon"
    assert moved.status_code == 200
    assert (moved.json()["name"], moved.json()["timezone"]) == ("New name", "America/Sao_Paulo")
    row = await stored(superuser_engine, "clinics", clinic.id)
    assert (row["name"], row["timezone"]) == ("New name", "America/Sao_Paulo")
    assert (await client.get(CLINIC, headers=headers)).json() == moved.json()


@pytest.mark.parametrize(
    "body",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../../etc/passwd"},
        {"timezone": ""},
        {"timezone": None},
        {"name": ""},
        {"name": "   "},
        {"name": None},
        {"name": "x" * 201},
        {"id": MISSING_ID},
    ],
)
async def test_invalid_clinic_changes_are_422_and_change_nothing(
    client, world, superuser_engine, body
):
    clinic = await world.clinic()
    before = await stored(superuser_engine, "clinics", clinic.id)

    response = await client.patch(CLINIC, json=body, headers=clinic.owner.headers)

    assert_problem(response, 422, "validation-error")
    assert [e["loc"][:2] for e in response.json()["errors"]] == [["body", next(iter(body))]]
    assert await stored(superuser_engine, "clinics", clinic.id) == before


@pytest.mark.parametrize("role", [Role.vet, Role.technician, Role.receptionist, Role.read_only])
async def test_other_roles_cannot_change_the_clinic(client, world, superuser_engine, role):
    clinic = await world.clinic()
    before = await stored(superuser_engine, "clinics", clinic.id)

    response = await client.patch(
        CLINIC, json={"name": "Hijacked"}, headers=clinic.actors[role].headers
    )

    assert_problem(response, 403, "forbidden")
    assert await stored(superuser_engine, "clinics", clinic.id) == before


# -- locations ----------------------------------------------------------------------------------
NEW_LOCATION = {
    "name": "Matosinhos branch",
    "address_line1": "Avenida da República 100",
    "address_line2": None,
    "city": "Matosinhos",
    "postcode": "4450-242",
    "country": "PT",
    "phone": "+351229999999",
}


async def test_location_create_list_get_patch(client, world, superuser_engine):
    clinic = await world.clinic()
    headers = clinic.owner.headers

    created = await client.post(LOCATIONS, json=NEW_LOCATION, headers=headers)
    assert created.status_code == 201
    location = created.json()
    assert without(location, "id") == NEW_LOCATION
    assert uuid.UUID(location["id"]).version == 7

    listed = await client.get(LOCATIONS, headers=clinic.actors[Role.read_only].headers)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [
        str(clinic.setup.location.id),
        location["id"],
    ]
    assert listed.json()["next_cursor"] is None

    got = await client.get(f"{LOCATIONS}/{location['id']}", headers=headers)
    assert got.status_code == 200
    assert got.json() == location

    patched = await client.patch(
        f"{LOCATIONS}/{location['id']}", json={"name": "Leça", "phone": None}, headers=headers
    )
    assert patched.status_code == 200
    assert patched.json() == {**location, "name": "Leça", "phone": None}
    row = await stored(superuser_engine, "locations", location["id"])
    assert (row["name"], row["phone"], row["tenant_id"]) == ("Leça", None, clinic.id)


async def test_location_rules(client, world, superuser_engine):
    clinic = await world.clinic()
    location_id = clinic.setup.location.id
    before = await stored(superuser_engine, "locations", location_id)

    bad_country = await client.post(
        LOCATIONS, json={**NEW_LOCATION, "country": "pt"}, headers=clinic.owner.headers
    )
    no_name = await client.patch(
        f"{LOCATIONS}/{location_id}", json={"name": None}, headers=clinic.owner.headers
    )
    by_receptionist = await client.post(
        LOCATIONS, json=NEW_LOCATION, headers=clinic.actors[Role.receptionist].headers
    )
    unknown = await client.get(f"{LOCATIONS}/{MISSING_ID}", headers=clinic.owner.headers)

    assert_problem(bad_country, 422, "validation-error")
    assert_problem(no_name, 422, "validation-error")
    assert_problem(by_receptionist, 403, "forbidden")
    assert_problem(unknown, 404, "not-found")
    assert await stored(superuser_engine, "locations", location_id) == before
    async with superuser_engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM locations WHERE tenant_id = :id"), {"id": clinic.id}
        )
    assert count == 1


# -- rooms --------------------------------------------------------------------------------------
async def test_room_create_list_get_patch(client, world, superuser_engine):
    clinic = await world.clinic()
    headers = clinic.actors[Role.admin].headers
    main = str(clinic.setup.location.id)
    branch = (await client.post(LOCATIONS, json=NEW_LOCATION, headers=headers)).json()["id"]

    created = await client.post(
        ROOMS, json={"location_id": main, "name": "Surgery"}, headers=headers
    )
    assert created.status_code == 201
    room = created.json()
    assert without(room, "id") == {"location_id": main, "name": "Surgery", "active": True}
    other = await client.post(
        ROOMS, json={"location_id": branch, "name": "Kennel", "active": False}, headers=headers
    )
    assert other.status_code == 201

    everything = await client.get(ROOMS, headers=headers)
    at_main = await client.get(ROOMS, params={"location_id": main}, headers=headers)
    assert [r["id"] for r in everything.json()["items"]] == [room["id"], other.json()["id"]]
    assert at_main.json()["items"] == [room]

    got = await client.get(f"{ROOMS}/{room['id']}", headers=clinic.actors[Role.vet].headers)
    assert got.status_code == 200
    assert got.json() == room

    patched = await client.patch(
        f"{ROOMS}/{room['id']}", json={"name": "Surgery 1", "active": False}, headers=headers
    )
    assert patched.status_code == 200
    assert patched.json() == {**room, "name": "Surgery 1", "active": False}
    row = await stored(superuser_engine, "rooms", room["id"])
    assert (row["name"], row["active"], str(row["location_id"])) == ("Surgery 1", False, main)


async def test_rooms_page_through(client, world):
    clinic = await world.clinic()
    made = [
        str((await world.make(clinic, RoomFactory, location_id=clinic.setup.location.id)).id)
        for _ in range(3)
    ]

    first = await client.get(ROOMS, params={"limit": 2}, headers=clinic.owner.headers)
    second = await client.get(
        ROOMS,
        params={"limit": 2, "cursor": first.json()["next_cursor"]},
        headers=clinic.owner.headers,
    )

    assert [r["id"] for r in first.json()["items"] + second.json()["items"]] == made
    assert second.json()["next_cursor"] is None


async def test_room_for_an_unknown_location_is_422_and_creates_nothing(
    client, world, superuser_engine
):
    clinic = await world.clinic()
    other = await world.clinic()

    for location_id in (MISSING_ID, str(other.setup.location.id)):
        response = await client.post(
            ROOMS,
            json={"location_id": location_id, "name": "Ghost room"},
            headers=clinic.owner.headers,
        )
        assert_problem(response, 422, "validation-error")
        assert [e["loc"] for e in response.json()["errors"]] == [["body", "location_id"]]
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM rooms")) == 0


async def test_room_rules(client, world, superuser_engine):
    clinic = await world.clinic()
    room = await world.make(clinic, RoomFactory, location_id=clinic.setup.location.id)
    before = await stored(superuser_engine, "rooms", room.id)

    moved = await client.patch(
        f"{ROOMS}/{room.id}", json={"location_id": MISSING_ID}, headers=clinic.owner.headers
    )
    nameless = await client.patch(
        f"{ROOMS}/{room.id}", json={"name": None}, headers=clinic.owner.headers
    )
    by_vet = await client.patch(
        f"{ROOMS}/{room.id}", json={"active": False}, headers=clinic.actors[Role.vet].headers
    )
    unknown = await client.patch(
        f"{ROOMS}/{MISSING_ID}", json={"active": False}, headers=clinic.owner.headers
    )

    assert_problem(moved, 422, "validation-error")  # a room does not change location
    assert_problem(nameless, 422, "validation-error")
    assert_problem(by_vet, 403, "forbidden")
    assert_problem(unknown, 404, "not-found")
    assert await stored(superuser_engine, "rooms", room.id) == before
