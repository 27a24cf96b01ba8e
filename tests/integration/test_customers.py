"""Pet owners over HTTP: create, read, change, delete, search, paging, consent, permissions."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from app.auth.models import Role
from app.customers import service
from app.customers.models import Customer
from app.db.tenancy import InClinic
from fixtures.factories import CustomerFactory, PetFactory
from tests.harness.api import assert_problem
from tests.harness.world import ClinicWorld, World

URL = "/api/v1/customers"
MISSING_ID = "01900000-0000-7000-8000-000000000000"


def new_customer(**overrides: object) -> dict:
    body = {
        "first_name": "Ana",
        "last_name": "Silva",
        "email": "ana.silva@example.com",
        "phone": "+351912345678",
        "address_line1": "Rua das Flores 12",
        "city": "Porto",
        "postcode": "4050-262",
        "country": "PT",
        "preferred_language": "pt-BR",
    }
    return {**body, **overrides}


async def create(client, headers, **overrides) -> dict:
    response = await client.post(URL, json=new_customer(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def list_all(client, headers, **params) -> list[dict]:
    response = await client.get(URL, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def stored(world: World, clinic: ClinicWorld, customer_id) -> dict | None:
    """The customer's row as stored, its sealed contact details opened as the service opens
    them (a test that they are sealed at all: tests/security/test_sealed_at_rest.py)."""
    async with world.session(clinic.id) as session:
        customer = await session.get(Customer, uuid.UUID(str(customer_id)))
        if customer is None:
            return None
        contact = await service.contact_of(session, InClinic(clinic.id), customer)
        return {
            **{column.key: getattr(customer, column.key) for column in Customer.__table__.columns},
            **contact.model_dump(),
        }


async def test_create_echoes_the_fields_and_gets_a_uuid7(client, world):
    clinic = await world.clinic()

    response = await client.post(URL, json=new_customer(), headers=clinic.owner.headers)

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in new_customer()} == new_customer()
    assert body["address_line2"] is None
    assert uuid.UUID(body["id"]).version == 7
    assert body["consents"] == {"email": None, "whatsapp": None, "sms": None}
    got = await client.get(f"{URL}/{body['id']}", headers=clinic.owner.headers)
    assert got.status_code == 200
    assert got.json() == body


async def test_get_unknown_customer_is_404(client, world):
    clinic = await world.clinic()

    response = await client.get(f"{URL}/{MISSING_ID}", headers=clinic.owner.headers)

    assert_problem(response, 404, "not-found")


async def test_patch_changes_only_the_fields_sent(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await create(client, clinic.owner.headers)

    response = await client.patch(
        f"{URL}/{customer['id']}", json={"city": "Braga"}, headers=clinic.owner.headers
    )

    assert response.status_code == 200
    expected = {**customer, "city": "Braga"}
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        k: v for k, v in expected.items() if k != "updated_at"
    }
    assert (await stored(world, clinic, customer["id"]))["city"] == "Braga"


@pytest.mark.parametrize("field", ["first_name", "last_name", "preferred_language"])
async def test_patch_null_on_a_required_field_is_422(client, world, superuser_engine, field):
    clinic = await world.clinic()
    customer = await create(client, clinic.owner.headers)
    before = await stored(world, clinic, customer["id"])

    response = await client.patch(
        f"{URL}/{customer['id']}", json={field: None}, headers=clinic.owner.headers
    )

    assert_problem(response, 422, "validation-error")
    assert ["body", field] in [e["loc"][:2] for e in response.json()["errors"]]
    assert await stored(world, clinic, customer["id"]) == before


@pytest.mark.parametrize("field", ["email", "phone", "address_line1", "city", "country"])
async def test_patch_null_on_an_optional_field_clears_it(client, world, superuser_engine, field):
    clinic = await world.clinic()
    customer = await create(client, clinic.owner.headers)

    response = await client.patch(
        f"{URL}/{customer['id']}", json={field: None}, headers=clinic.owner.headers
    )

    assert response.status_code == 200
    assert response.json()[field] is None
    assert response.json()["first_name"] == customer["first_name"]
    assert (await stored(world, clinic, customer["id"]))[field] is None


async def test_delete_then_404(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await create(client, clinic.owner.headers, consents={"email": True})

    deleted = await client.delete(f"{URL}/{customer['id']}", headers=clinic.owner.headers)

    assert deleted.status_code == 204
    assert deleted.content == b""
    again = await client.get(f"{URL}/{customer['id']}", headers=clinic.owner.headers)
    assert_problem(again, 404, "not-found")
    assert await stored(world, clinic, customer["id"]) is None
    assert_problem(
        await client.delete(f"{URL}/{customer['id']}", headers=clinic.owner.headers),
        404,
        "not-found",
    )


async def test_delete_a_customer_with_pets_is_409_and_keeps_them(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    await world.make(clinic, PetFactory, customer_id=customer.id)

    response = await client.delete(f"{URL}/{customer.id}", headers=clinic.owner.headers)

    assert_problem(response, 409, "conflict")
    assert await stored(world, clinic, customer.id) is not None
    got = await client.get(f"{URL}/{customer.id}", headers=clinic.owner.headers)
    assert got.status_code == 200


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("silva", {"Ana Silva"}),  # last name, any case
        ("ana SIL", {"Ana Silva"}),  # across first and last name
        ("Costa", {"Rui Costa", "Marta Costa"}),
        (" RUI.Costa@Example.com ", {"Rui Costa"}),  # a whole email address, any case
        ("+351 93 111 1111", {"Rui Costa"}),  # a whole phone number, as typed
        ("(+351) 967-777.123", {"Marta Costa"}),
        # Contact details are sealed (ADR 0032): found by their blind index, whole, not by part.
        ("rui.costa@", set()),
        ("example.com", set()),
        ("+35193", set()),
        ("7777", set()),
        ("nobody", set()),
    ],
)
async def test_search_by_part_of_a_name_or_a_whole_email_or_phone(client, world, q, expected):
    clinic = await world.clinic()
    headers = clinic.owner.headers
    await create(client, headers)
    await create(
        client,
        headers,
        first_name="Rui",
        last_name="Costa",
        email="rui.costa@example.com",
        phone="+351931111111",
    )
    await create(
        client,
        headers,
        first_name="Marta",
        last_name="Costa",
        email="marta@example.com",
        phone="+351967777123",
    )

    items = await list_all(client, headers, q=q)

    assert {f"{c['first_name']} {c['last_name']}" for c in items} == expected


async def test_pagination_walk_returns_every_customer_once(client, world):
    clinic = await world.clinic()
    made = {str((await world.make(clinic, CustomerFactory)).id) for _ in range(5)}

    seen: list[str] = []
    pages = 0
    params: dict[str, object] = {"limit": 2}
    while True:
        response = await client.get(URL, params=params, headers=clinic.owner.headers)
        assert response.status_code == 200
        body = response.json()
        pages += 1
        assert len(body["items"]) <= 2
        seen += [c["id"] for c in body["items"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": 2, "cursor": body["next_cursor"]}
        assert pages < 10, "the cursor never ends"

    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == made
    assert seen == sorted(seen, key=uuid.UUID)


async def test_consent_per_channel_keeps_the_whole_history(client, world, superuser_engine):
    clinic = await world.clinic()
    headers = clinic.actors[Role.receptionist].headers
    customer = await create(client, headers, consents={"email": True})
    first = customer["consents"]
    assert first["email"]["granted"] is True
    assert first["whatsapp"] is None
    assert first["sms"] is None

    response = await client.patch(
        f"{URL}/{customer['id']}",
        json={"consents": {"email": False, "sms": True}},
        headers=headers,
    )

    assert response.status_code == 200
    consents = response.json()["consents"]
    assert consents["email"]["granted"] is False
    assert consents["sms"]["granted"] is True
    assert consents["whatsapp"] is None
    granted_at = dt.datetime.fromisoformat(first["email"]["changed_at"])
    withdrawn_at = dt.datetime.fromisoformat(consents["email"]["changed_at"])
    assert withdrawn_at > granted_at
    assert dt.datetime.fromisoformat(consents["sms"]["changed_at"]) == withdrawn_at
    got = await client.get(f"{URL}/{customer['id']}", headers=headers)
    assert got.json()["consents"] == consents

    async with superuser_engine.connect() as connection:
        events = (
            await connection.execute(
                text(
                    "SELECT channel::text, granted, recorded_by FROM consent_events"
                    " WHERE customer_id = :id ORDER BY recorded_at, channel"
                ),
                {"id": customer["id"]},
            )
        ).all()
    receptionist = clinic.actors[Role.receptionist].user.id
    assert [tuple(e) for e in events] == [
        ("email", True, receptionist),
        ("email", False, receptionist),
        ("sms", True, receptionist),
    ]


async def test_repeating_the_consent_in_force_records_nothing(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await create(client, clinic.owner.headers, consents={"email": True})

    response = await client.patch(
        f"{URL}/{customer['id']}",
        json={"consents": {"email": True}},
        headers=clinic.owner.headers,
    )

    assert response.status_code == 200
    assert response.json()["consents"] == customer["consents"]
    async with superuser_engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM consent_events WHERE customer_id = :id"),
            {"id": customer["id"]},
        )
    assert count == 1


async def test_read_only_can_read_but_not_write(client, world, superuser_engine):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    headers = clinic.actors[Role.read_only].headers
    before = await stored(world, clinic, customer.id)

    listed = await client.get(URL, headers=headers)
    got = await client.get(f"{URL}/{customer.id}", headers=headers)
    created = await client.post(URL, json=new_customer(), headers=headers)
    patched = await client.patch(
        f"{URL}/{customer.id}", json={"first_name": "Changed"}, headers=headers
    )
    deleted = await client.delete(f"{URL}/{customer.id}", headers=headers)

    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()["items"]] == [str(customer.id)]
    assert got.status_code == 200
    assert got.json()["first_name"] == customer.first_name
    for response in (created, patched, deleted):
        assert_problem(response, 403, "forbidden")
    assert await stored(world, clinic, customer.id) == before
    async with superuser_engine.connect() as connection:
        count = await connection.scalar(
            text("SELECT count(*) FROM customers WHERE tenant_id = :id"), {"id": clinic.id}
        )
    assert count == 1


async def test_search_treats_like_wildcards_as_plain_characters(client, world):
    clinic = await world.clinic(roles=())
    await world.make(clinic, CustomerFactory, first_name="Ana", last_name="Silva")
    await world.make(clinic, CustomerFactory, first_name="100%", last_name="Organic")

    percent = await client.get("/api/v1/customers", params={"q": "%"}, headers=clinic.owner.headers)
    underscore = await client.get(
        "/api/v1/customers", params={"q": "_"}, headers=clinic.owner.headers
    )

    assert [c["first_name"] for c in percent.json()["items"]] == ["100%"]
    assert underscore.json()["items"] == []
