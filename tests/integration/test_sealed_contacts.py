"""Clients' contact details sealed at rest (ADR 0032), against the real database: what is stored
is no plaintext, bound to its clinic and row; found again by blind indexes that differ from
clinic to clinic; a clinic's first index key made once however many ask at once; rotated with
the clinic's data key without a search losing anything; and migration 0019 sealing the rows
stored before it and opening them again on the way down."""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.customers import service as customers
from app.customers.models import Customer
from app.db import migrate
from app.db.tenancy import InClinic, enter_tenant
from app.keys import blind, rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.storage import storage_from
from tests.harness.api import assert_problem
from tests.harness.databases import APP_ROLE
from tests.harness.world import ClinicWorld, World

URL = "/api/v1/customers"


pytestmark = pytest.mark.usefixtures("fresh_process_keys")


def contact(tag: str) -> dict[str, str]:
    """Contact details made of strings found nowhere else (``tag`` tells them apart)."""
    digits = str(uuid.uuid4().int)[:8]
    return {
        "email": f"canary.{tag}.{uuid.uuid4().hex[:10]}@example.org",
        "phone": f"+3519{digits}",
        "address_line1": f"Rua Canario {tag} {digits}",
        "address_line2": f"Andar {digits}",
        "city": f"Vila {tag}{digits}",
        "postcode": f"{digits[:4]}-{digits[4:7]}",
        "country": "PT",
    }


async def added(client: httpx.AsyncClient, clinic: ClinicWorld, details: dict[str, str]) -> dict:
    body = {"first_name": "Sealed", "last_name": "Client", **details}
    response = await client.post(URL, json=body, headers=clinic.owner.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def row(engine: AsyncEngine, customer_id: object) -> dict:
    async with engine.connect() as connection:
        found = await connection.execute(
            text("SELECT * FROM customers WHERE id = :id"), {"id": customer_id}
        )
        return dict(found.mappings().one())


async def found(client: httpx.AsyncClient, clinic: ClinicWorld, q: str) -> list[str]:
    response = await client.get(URL, params={"q": q}, headers=clinic.owner.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_stored_contact_details_are_sealed_and_given_back_whole(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic()
    details = contact("whole")
    made = await added(client, clinic, details)

    stored = await row(superuser_engine, made["id"])
    assert set(details) & set(stored) == set()  # no plain column left for any of them
    assert sealing.version_of(stored["contact_sealed"]) == 1
    kept = b"".join(v for v in stored.values() if isinstance(v, bytes))
    for value in details.values():
        if value != "PT":
            assert value.encode() not in kept
    shown = await client.get(f"{URL}/{made['id']}", headers=clinic.owner.headers)
    assert {k: shown.json()[k] for k in details} == details
    assert await found(client, clinic, details["email"]) == [made["id"]]  # and by its index


async def test_a_client_without_contact_details_stores_nothing_sealed(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic()
    made = await added(client, clinic, {})
    stored = await row(superuser_engine, made["id"])
    assert (stored["contact_sealed"], stored["email_index"], stored["phone_index"]) == (
        None,
        None,
        None,
    )
    assert all(made[field] is None for field in ("email", "phone", "city"))
    # The clinic has indexed nothing yet (no index key): an address or a number finds nobody.
    assert await found(client, clinic, "someone@example.org") == []
    assert await found(client, clinic, "+351910000000") == []


async def test_a_sealed_value_moved_to_another_row_or_clinic_does_not_open(
    client, world: World, superuser_engine, app_engine
) -> None:
    ours, theirs = await world.clinic(), await world.clinic()
    first = await added(client, ours, contact("first"))
    second = await added(client, ours, contact("second"))
    foreign = await added(client, theirs, contact("foreign"))
    moved = (await row(superuser_engine, first["id"]))["contact_sealed"]
    async with superuser_engine.begin() as connection:
        for target in (second["id"], foreign["id"]):
            await connection.execute(
                text("UPDATE customers SET contact_sealed = :s WHERE id = :id"),
                {"s": moved, "id": target},
            )

    sessions = async_sessionmaker(app_engine, expire_on_commit=False)
    for clinic, target in ((ours, second["id"]), (theirs, foreign["id"])):
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic.id)
            customer = await session.get(Customer, uuid.UUID(target))
            assert customer is not None
            with pytest.raises(sealing.Unreadable, match="does not open here"):
                await customers.contact_of(session, InClinic(clinic.id), customer)


async def test_a_value_that_does_not_open_is_a_problem_that_says_so_and_a_write_changes_nothing(
    client, world: World, superuser_engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Not the generic 500: the operator's log names the request and the reason, the client
    learns that stored data, not its request, is at fault; a write that needed it is undone."""
    caplog.set_level(logging.ERROR, logger="vetify.errors")
    clinic = await world.clinic()
    first = await added(client, clinic, contact("first"))
    second = await added(client, clinic, contact("second"))
    moved = (await row(superuser_engine, first["id"]))["contact_sealed"]
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("UPDATE customers SET contact_sealed = :s WHERE id = :id"),
            {"s": moved, "id": second["id"]},
        )
    before = await row(superuser_engine, second["id"])
    where = f"{URL}/{second['id']}"

    shown = await client.get(where, headers=clinic.owner.headers)
    changed = await client.patch(where, json={"city": "Elsewhere"}, headers=clinic.owner.headers)

    for response in (shown, changed):
        body = assert_problem(response, 500, "sealed-value-unreadable")
        assert "does not open" in body["detail"]
        assert body["request_id"]
    assert await row(superuser_engine, second["id"]) == before
    told = [r.getMessage() for r in caplog.records if r.name == "vetify.errors"]
    assert [m.split(": ")[0] for m in told] == [
        f"a sealed value does not open on GET {where}",
        f"a sealed value does not open on PATCH {where}",
    ]
    assert all("does not open here" in message for message in told)
    # The row it was sealed for still opens.
    assert (await client.get(f"{URL}/{first['id']}", headers=clinic.owner.headers)).is_success


async def test_blind_indexes_match_a_whole_value_and_differ_between_clinics(
    client, world: World, superuser_engine
) -> None:
    ours, theirs = await world.clinic(), await world.clinic()
    details = contact("twice")
    here = await added(client, ours, details)
    there = await added(client, theirs, details)  # the same person, a client of both

    mine, yours = await row(superuser_engine, here["id"]), await row(superuser_engine, there["id"])
    assert mine["email_index"] != yours["email_index"]
    assert mine["phone_index"] != yours["phone_index"]
    assert mine["email_index"] != mine["phone_index"]
    assert await found(client, ours, details["email"].upper()) == [here["id"]]
    assert await found(client, theirs, details["phone"]) == [there["id"]]
    assert await found(client, ours, details["email"][:-1]) == []

    # The same address again changes nothing stored (no new seal, no change in the trail).
    same = await client.patch(
        f"{URL}/{here['id']}", json={"email": details["email"]}, headers=ours.owner.headers
    )
    assert same.status_code == 200, same.text
    assert await row(superuser_engine, here["id"]) == mine
    # A change of address moves the index with it; the old one finds nobody.
    new_email = f"moved.{uuid.uuid4().hex[:8]}@example.org"
    patched = await client.patch(
        f"{URL}/{here['id']}", json={"email": new_email}, headers=ours.owner.headers
    )
    assert patched.json()["email"] == new_email
    assert patched.json()["phone"] == details["phone"]  # the rest kept
    assert await found(client, ours, new_email) == [here["id"]]
    assert await found(client, ours, details["email"]) == []


async def test_a_clinics_first_index_key_is_made_once_however_many_ask(
    world: World, app_engine, superuser_engine
) -> None:
    clinic = await world.clinic(())
    sessions = async_sessionmaker(app_engine, expire_on_commit=False)

    async def ask() -> bytes:
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic.id)
            return await blind.index_key(session, InClinic(clinic.id))

    made = await asyncio.gather(*(ask() for _ in range(6)))
    assert len(set(made)) == 1
    async with sessions() as session, session.begin():
        await enter_tenant(session, clinic.id)
        assert await blind.index_key_if_any(session, InClinic(clinic.id)) == made[0]


async def test_rotating_a_clinics_key_reseals_contacts_and_index_key_and_search_still_finds(
    client, world: World, database, superuser_engine, settings, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    clinic = await world.clinic()
    people = [contact(f"rot{n}") for n in range(3)]
    made = [await added(client, clinic, details) for details in people]

    done = await rotation.rotate_dek(
        database.owner_url,
        keys.wrapper_from(settings),
        storage_from(settings),
        str(clinic.id),
        retire=True,
    )

    assert (done.version, done.resealed, done.left, done.retired) == (2, 3 + 1, 0, [1])
    async with superuser_engine.connect() as connection:
        index_key = await connection.scalar(
            text("SELECT index_key_sealed FROM clinics WHERE id = :id"), {"id": clinic.id}
        )
    assert sealing.version_of(index_key) == 2
    for details, customer in zip(people, made, strict=True):
        assert (
            sealing.version_of((await row(superuser_engine, customer["id"]))["contact_sealed"]) == 2
        )
        assert await found(client, clinic, details["email"]) == [customer["id"]]
        shown = await client.get(f"{URL}/{customer['id']}", headers=clinic.owner.headers)
        assert shown.json()["address_line1"] == details["address_line1"]


async def test_migration_0019_seals_the_stored_contacts_and_its_downgrade_opens_them(
    client, world: World, database, superuser_engine, settings
) -> None:
    ours, theirs = await world.clinic(), await world.clinic()
    wrapper = keys.wrapper_from(settings)
    config = migrate.alembic_config(database.owner_url, APP_ROLE, wrapper)
    await asyncio.to_thread(command.downgrade, config, "0018")
    before: dict[uuid.UUID, dict[str, str | None]] = {}
    async with superuser_engine.begin() as connection:
        for clinic, details in (
            (ours, contact("m1")),
            (ours, {**contact("m2"), "email": None, "address_line2": None}),
            (ours, dict.fromkeys(contact("m3"))),  # no contact details at all
            (theirs, contact("m4")),
        ):
            customer_id = uuid.uuid4()
            await connection.execute(
                text(
                    "INSERT INTO customers (id, tenant_id, first_name, last_name,"
                    " preferred_language, email, phone, address_line1, address_line2, city,"
                    " postcode, country)"
                    " VALUES (:id, :clinic, 'Before', 'Sealing', 'pt', :email, :phone,"
                    " :address_line1, :address_line2, :city, :postcode, :country)"
                ),
                {"id": customer_id, "clinic": clinic.id, **details},
            )
            before[customer_id] = details

    # Without keys there is nothing to seal them with: refused, and nothing changed.
    with pytest.raises(RuntimeError, match="vetify migrate"):
        await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE)
    await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE, "head", wrapper)

    for customer_id, details in before.items():
        stored = await row(superuser_engine, customer_id)
        assert (stored["contact_sealed"] is None) == (details["phone"] is None)
        clinic = ours if stored["tenant_id"] == ours.id else theirs
        shown = await client.get(f"{URL}/{customer_id}", headers=clinic.owner.headers)
        assert {k: shown.json()[k] for k in details} == details
        if details["email"] is not None:
            assert await found(client, clinic, details["email"]) == [str(customer_id)]
        if details["phone"] is not None:
            assert await found(client, clinic, details["phone"]) == [str(customer_id)]

    await asyncio.to_thread(command.downgrade, config, "0018")
    async with superuser_engine.connect() as connection:
        for customer_id, details in before.items():
            back = await connection.execute(
                text(f"SELECT {', '.join(details)} FROM customers WHERE id = :id"),
                {"id": customer_id},
            )
            assert dict(back.mappings().one()) == details
