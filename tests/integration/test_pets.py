"""Pets over HTTP: registration, filters, microchips, weights, changes and deletion."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from app.auth.models import Role
from fixtures.factories import AppointmentFactory, CustomerFactory, PetFactory
from tests.harness.api import assert_problem

URL = "/api/v1/pets"
MISSING_ID = "01900000-0000-7000-8000-000000000000"


def new_pet(customer_id, **overrides: object) -> dict:
    body = {
        "customer_id": str(customer_id),
        "name": "Bolinha",
        "species": "dog",
        "breed": "Beagle",
        "sex": "female",
        "neutered": True,
        "date_of_birth": "2019-04-01",
        "microchip": "941000024680135",
        "alerts": ["Bites when muzzled"],
    }
    return {**body, **overrides}


async def create(client, headers, customer_id, **overrides) -> dict:
    response = await client.post(URL, json=new_pet(customer_id, **overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def names(client, headers, **params) -> set[str]:
    response = await client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {p["name"] for p in response.json()["items"]}


async def pet_count(engine, **where) -> int:
    clause = " AND ".join(f"{column} = :{column}" for column in where) or "true"
    async with engine.connect() as connection:
        return await connection.scalar(text(f"SELECT count(*) FROM pets WHERE {clause}"), where)


async def test_create_for_a_customer(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    headers = clinic.actors[Role.receptionist].headers

    response = await client.post(URL, json=new_pet(customer.id), headers=headers)

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in new_pet(customer.id)} == new_pet(customer.id)
    assert body["deceased"] is False
    assert uuid.UUID(body["id"]).version == 7
    got = await client.get(f"{URL}/{body['id']}", headers=headers)
    assert got.status_code == 200
    assert got.json() == body
    assert await pet_count(superuser_engine, id=body["id"], tenant_id=clinic.id) == 1


async def test_create_with_only_the_required_fields_uses_defaults(client, world):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)

    response = await client.post(
        URL,
        json={"customer_id": str(customer.id), "name": "Tom", "species": "cat"},
        headers=clinic.owner.headers,
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["sex"], body["neutered"], body["alerts"], body["microchip"]) == (
        "unknown",
        False,
        [],
        None,
    )


async def test_create_for_an_unknown_customer_is_422_and_creates_nothing(
    client, world, superuser_engine
):
    clinic = await world.clinic()

    response = await client.post(URL, json=new_pet(MISSING_ID), headers=clinic.owner.headers)

    assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "customer_id"]]
    assert await pet_count(superuser_engine) == 0


async def test_create_for_another_clinics_customer_is_422(client, world, superuser_engine):
    clinic = await world.clinic()
    other = await world.clinic()
    foreign = await world.make(other, CustomerFactory)

    response = await client.post(URL, json=new_pet(foreign.id), headers=clinic.owner.headers)

    assert_problem(response, 422, "validation-error")
    assert [e["loc"] for e in response.json()["errors"]] == [["body", "customer_id"]]
    assert await pet_count(superuser_engine) == 0


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"Rex", "Tom", "Nina"}),
        ({"customer_id": "first"}, {"Rex", "Tom"}),
        ({"customer_id": "second"}, {"Nina"}),
        ({"species": "cat"}, {"Tom"}),
        ({"species": "dog"}, {"Rex", "Nina"}),
        ({"species": "dog", "customer_id": "first"}, {"Rex"}),
        ({"q": "re"}, {"Rex"}),
        ({"q": "NI"}, {"Nina"}),
        ({"q": "941000000000222"}, {"Tom"}),  # microchip, whole number
        ({"q": "nobody"}, set()),
        ({"include_deceased": "true"}, {"Rex", "Tom", "Nina", "Old Max"}),
        ({"include_deceased": "true", "q": "max"}, {"Old Max"}),
        ({"q": "max"}, set()),  # deceased are hidden by default
    ],
)
async def test_filters(client, world, params, expected):
    clinic = await world.clinic()
    first = await world.make(clinic, CustomerFactory)
    second = await world.make(clinic, CustomerFactory)
    owners = {"first": first.id, "second": second.id}
    for name, owner, species, chip, deceased in [
        ("Rex", first, "dog", "941000000000111", False),
        ("Tom", first, "cat", "941000000000222", False),
        ("Nina", second, "dog", None, False),
        ("Old Max", second, "dog", "941000000000444", True),
    ]:
        await world.make(
            clinic,
            PetFactory,
            customer_id=owner.id,
            name=name,
            species=species,
            microchip=chip,
            deceased=deceased,
        )
    if "customer_id" in params:
        params = {**params, "customer_id": str(owners[params["customer_id"]])}

    assert await names(client, clinic.owner.headers, **params) == expected


async def test_microchip_is_unique_within_a_clinic(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    first = await create(client, clinic.owner.headers, customer.id)

    again = await client.post(
        URL, json=new_pet(customer.id, name="Twin"), headers=clinic.owner.headers
    )
    other = await create(client, clinic.owner.headers, customer.id, microchip="941000099999999")
    moved = await client.patch(
        f"{URL}/{other['id']}",
        json={"microchip": first["microchip"]},
        headers=clinic.owner.headers,
    )

    assert_problem(again, 409, "conflict")
    assert_problem(moved, 409, "conflict")
    assert await pet_count(superuser_engine, microchip=first["microchip"]) == 1
    assert await pet_count(superuser_engine, id=other["id"], microchip="941000099999999") == 1


async def test_the_same_microchip_is_fine_in_another_clinic(client, world, superuser_engine):
    clinic = await world.clinic()
    other = await world.clinic()
    await create(client, clinic.owner.headers, (await world.make(clinic, CustomerFactory)).id)

    response = await client.post(
        URL,
        json=new_pet((await world.make(other, CustomerFactory)).id),
        headers=other.owner.headers,
    )

    assert response.status_code == 201
    assert await pet_count(superuser_engine, microchip=new_pet(None)["microchip"]) == 2


async def test_weights_come_back_oldest_first(client, world):
    clinic = await world.clinic()
    pet = await world.make(
        clinic, PetFactory, customer_id=(await world.make(clinic, CustomerFactory)).id
    )
    url = f"{URL}/{pet.id}/weights"
    headers = clinic.actors[Role.technician].headers

    newer = await client.post(
        url, json={"weight_kg": 12.5, "measured_at": "2025-03-01T10:00:00Z"}, headers=headers
    )
    older = await client.post(
        url, json={"weight_kg": 11.25, "measured_at": "2025-01-15T09:30:00+01:00"}, headers=headers
    )
    series = await client.get(url, headers=headers)

    assert newer.status_code == older.status_code == 201
    assert series.status_code == 200
    assert [(w["id"], w["weight_kg"]) for w in series.json()] == [
        (older.json()["id"], 11.25),
        (newer.json()["id"], 12.5),
    ]
    assert series.json()[0]["measured_at"].startswith("2025-01-15T08:30:00")


async def test_weight_without_a_time_is_measured_now(client, world):
    clinic = await world.clinic()
    pet = await world.make(
        clinic, PetFactory, customer_id=(await world.make(clinic, CustomerFactory)).id
    )

    response = await client.post(
        f"{URL}/{pet.id}/weights", json={"weight_kg": 4.2}, headers=clinic.owner.headers
    )

    assert response.status_code == 201
    assert response.json()["weight_kg"] == 4.2
    assert response.json()["measured_at"]


@pytest.mark.parametrize("weight", [0, -1, 2001, "12"])
async def test_weight_must_be_a_plausible_number(client, world, weight):
    clinic = await world.clinic()
    pet = await world.make(
        clinic, PetFactory, customer_id=(await world.make(clinic, CustomerFactory)).id
    )

    response = await client.post(
        f"{URL}/{pet.id}/weights", json={"weight_kg": weight}, headers=clinic.owner.headers
    )

    assert_problem(response, 422, "validation-error")
    listed = await client.get(f"{URL}/{pet.id}/weights", headers=clinic.owner.headers)
    assert listed.json() == []


async def test_weights_of_an_unknown_pet_are_404(client, world):
    clinic = await world.clinic()

    posted = await client.post(
        f"{URL}/{MISSING_ID}/weights", json={"weight_kg": 3.0}, headers=clinic.owner.headers
    )
    listed = await client.get(f"{URL}/{MISSING_ID}/weights", headers=clinic.owner.headers)

    assert_problem(posted, 404, "not-found")
    assert_problem(listed, 404, "not-found")


async def test_patch_marks_deceased_and_hides_from_default_list(client, world):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await create(client, clinic.owner.headers, customer.id)

    response = await client.patch(
        f"{URL}/{pet['id']}", json={"deceased": True}, headers=clinic.owner.headers
    )

    assert response.status_code == 200
    assert response.json()["deceased"] is True
    assert {k: v for k, v in response.json().items() if k not in ("deceased", "updated_at")} == {
        k: v for k, v in pet.items() if k not in ("deceased", "updated_at")
    }
    assert await names(client, clinic.owner.headers) == set()
    assert await names(client, clinic.owner.headers, include_deceased="true") == {pet["name"]}


async def test_a_pet_moves_to_another_client_of_the_clinic_and_never_to_another_clinics(
    client, world
):
    clinic, other = await world.clinic(), await world.clinic()
    first, second = [await world.make(clinic, CustomerFactory) for _ in range(2)]
    foreign = await world.make(other, CustomerFactory)
    pet = await create(client, clinic.owner.headers, first.id)
    url = f"{URL}/{pet['id']}"

    refused = await client.patch(
        url, json={"customer_id": str(foreign.id)}, headers=clinic.owner.headers
    )
    moved = await client.patch(
        url, json={"customer_id": str(second.id)}, headers=clinic.owner.headers
    )

    assert_problem(refused, 422, "validation-error")
    assert [e["loc"] for e in refused.json()["errors"]] == [["body", "customer_id"]]
    assert moved.status_code == 200, moved.text
    got = await client.get(url, headers=clinic.owner.headers)
    assert got.json()["customer_id"] == str(second.id)


async def test_patch_null_clears_optional_fields_but_not_required_ones(client, world):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await create(client, clinic.owner.headers, customer.id)

    cleared = await client.patch(
        f"{URL}/{pet['id']}", json={"microchip": None, "breed": None}, headers=clinic.owner.headers
    )
    refused = await client.patch(
        f"{URL}/{pet['id']}", json={"name": None}, headers=clinic.owner.headers
    )

    assert cleared.status_code == 200
    assert (cleared.json()["microchip"], cleared.json()["breed"]) == (None, None)
    assert_problem(refused, 422, "validation-error")
    got = await client.get(f"{URL}/{pet['id']}", headers=clinic.owner.headers)
    assert got.json()["name"] == pet["name"]


async def test_delete_a_pet_without_history(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await create(client, clinic.owner.headers, customer.id)
    await client.post(
        f"{URL}/{pet['id']}/weights", json={"weight_kg": 20.0}, headers=clinic.owner.headers
    )

    response = await client.delete(f"{URL}/{pet['id']}", headers=clinic.owner.headers)

    assert response.status_code == 204
    assert_problem(
        await client.get(f"{URL}/{pet['id']}", headers=clinic.owner.headers), 404, "not-found"
    )
    assert await pet_count(superuser_engine) == 0


async def test_delete_a_pet_with_appointments_is_409_and_keeps_it(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    await world.make(
        clinic, AppointmentFactory, pet_id=pet.id, vet_id=clinic.actors[Role.vet].user.id
    )

    response = await client.delete(f"{URL}/{pet.id}", headers=clinic.owner.headers)

    assert_problem(response, 409, "conflict")
    assert await pet_count(superuser_engine, id=pet.id) == 1
    assert (await client.get(f"{URL}/{pet.id}", headers=clinic.owner.headers)).status_code == 200


async def test_read_only_cannot_register_or_change_pets(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    headers = clinic.actors[Role.read_only].headers

    listed = await client.get(URL, headers=headers)
    created = await client.post(URL, json=new_pet(customer.id), headers=headers)
    patched = await client.patch(f"{URL}/{pet.id}", json={"deceased": True}, headers=headers)
    weighed = await client.post(f"{URL}/{pet.id}/weights", json={"weight_kg": 3.0}, headers=headers)
    deleted = await client.delete(f"{URL}/{pet.id}", headers=headers)

    assert [p["id"] for p in listed.json()["items"]] == [str(pet.id)]
    for response in (created, patched, weighed, deleted):
        assert_problem(response, 403, "forbidden")
    assert await pet_count(superuser_engine) == 1
    assert await pet_count(superuser_engine, id=pet.id, deceased=False) == 1
