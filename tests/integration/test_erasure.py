"""A client's erasure (issue 20): nothing that identifies them is left in any table, what the
clinic must keep stays, a legal hold refuses it, and a change racing it never writes over it."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid

import httpx
from sqlalchemy import inspect

from app.appointments.models import Status
from app.auth.models import Role
from app.customers.models import Customer
from app.kit.clock import utcnow
from app.privacy.service import PERSONAL_COLUMNS, PERSONAL_FIELDS
from fixtures.factories import AppointmentFactory, MedicalRecordFactory, PetFactory
from tests.harness import databases
from tests.harness.api import assert_problem
from tests.harness.databases import Database
from tests.harness.world import ClinicWorld, World

CUSTOMERS = "/api/v1/customers"


def person() -> dict[str, str]:
    """A client whose every personal field is a string found nowhere else."""

    def drawn(label: str) -> str:
        return f"{label}{secrets.token_hex(6)}"

    return {
        "first_name": drawn("First"),
        "last_name": drawn("Last"),
        "email": f"{drawn('mail')}@example.com",
        "phone": f"+3519{secrets.randbelow(10**10):010d}",
        "address_line1": drawn("Street"),
        "address_line2": drawn("Floor"),
        "city": drawn("City"),
        "postcode": drawn("P"),
    }


async def add_customer(client: httpx.AsyncClient, clinic: ClinicWorld, **body: object) -> str:
    created = await client.post(CUSTOMERS, json=body, headers=clinic.owner.headers)
    assert created.status_code == 201, created.text
    customer_id: str = created.json()["id"]
    return customer_id


async def erase(client: httpx.AsyncClient, clinic: ClinicWorld, customer_id: str) -> httpx.Response:
    headers = clinic.actors[Role.admin].headers
    return await client.post(f"{CUSTOMERS}/{customer_id}/erase", headers=headers)


def test_the_erased_fields_are_every_personal_column_of_a_customer() -> None:
    # A personal column added to customers and not to the erasure fails here.
    kept = {"id", "tenant_id", "created_at", "updated_at", "erased_at", "legal_hold"}
    assert set(inspect(Customer).columns.keys()) - kept == set(PERSONAL_COLUMNS)


async def test_an_erased_client_is_in_no_table_and_what_the_clinic_keeps_stays(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    clinic = await world.clinic()
    first, then = person(), person()
    customer_id = await add_customer(
        client, clinic, **first, country="PT", consents={"email": True, "whatsapp": True}
    )
    # Values it held before are erased too: an address changed since, with a new phone.
    changed = await client.patch(
        f"{CUSTOMERS}/{customer_id}",
        json={"address_line1": then["address_line1"], "phone": then["phone"]},
        headers=clinic.owner.headers,
    )
    assert changed.status_code == 200, changed.text
    pet = await world.make(clinic, PetFactory, customer_id=uuid.UUID(customer_id))
    vet = clinic.actors[Role.vet].user.id
    record = await world.make(clinic, MedicalRecordFactory, pet_id=pet.id, author_id=vet)
    hour = utcnow().replace(minute=0, second=0, microsecond=0)
    past = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=vet,
        starts_at=hour - dt.timedelta(days=7),
        ends_at=hour - dt.timedelta(days=7) + dt.timedelta(minutes=20),
        status=Status.completed,
    )
    upcoming = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=vet,
        notes=f"Call {first['first_name']} on {then['phone']} the day before",
    )
    canaries = (*first.values(), *then.values())
    holding = await databases.tables_holding(database, canaries)
    assert {"public.customers", "public.appointments"} <= set(holding)  # the search finds them

    erased = await erase(client, clinic, customer_id)

    assert erased.status_code == 200, erased.text
    report = erased.json()
    assert report["consents_withdrawn"] == ["email", "whatsapp"]
    assert report["appointments_cancelled"] == [str(upcoming.id)]
    assert (report["pets_kept"], report["records_kept"]) == (1, 1)
    assert set(report["fields_erased"]) == set(PERSONAL_FIELDS)
    assert await databases.tables_holding(database, canaries) == []

    owner = clinic.owner.headers
    shown = (await client.get(f"{CUSTOMERS}/{customer_id}", headers=owner)).json()
    assert (shown["first_name"], shown["last_name"]) == ("Erased", "client")
    assert all(shown[field] is None for field in ("email", "phone", "address_line1", "country"))
    assert shown["erased_at"] == report["erased_at"]
    assert not shown["consents"]["email"]["granted"]
    assert not shown["consents"]["whatsapp"]["granted"]
    assert shown["consents"]["sms"] is None  # never given: nothing to withdraw
    # What the clinic must keep: the pet, its record, its past visit.
    kept_record = await client.get(f"/api/v1/medical-records/{record.id}", headers=owner)
    assert kept_record.status_code == 200
    kept_pet = (await client.get(f"/api/v1/pets/{pet.id}", headers=owner)).json()
    assert kept_pet["customer_id"] == customer_id
    book = "/api/v1/appointments/{}"
    assert (await client.get(book.format(past.id), headers=owner)).json()["status"] == "completed"
    cancelled = (await client.get(book.format(upcoming.id), headers=owner)).json()
    assert (cancelled["status"], cancelled["notes"], cancelled["reason"]) == (
        "cancelled",
        None,
        None,
    )
    # The trail says who erased what, by field name.
    trail = await client.get(
        "/api/v1/audit-events", params={"object_id": customer_id}, headers=owner
    )
    events = [e for e in trail.json()["items"] if e["action"] == "customers:privacy"]
    assert [(e["change"], e["user_id"]) for e in events] == [
        ("update", str(clinic.actors[Role.admin].user.id))
    ]
    assert {"contact_sealed", "first_name", "erased_at"} <= set(events[0]["fields"])


async def test_a_legal_hold_refuses_erasure_until_lifted_and_an_erasure_is_final(
    client: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic()
    details = person()
    customer_id = await add_customer(client, clinic, **details)
    url, admin = f"{CUSTOMERS}/{customer_id}", clinic.actors[Role.admin].headers
    held = await client.put(f"{url}/legal-hold", json={"reason": "Claim 2026/113"}, headers=admin)
    assert held.status_code == 204, held.text
    assert (await client.get(url, headers=admin)).json()["legal_hold"] == "Claim 2026/113"

    refused = assert_problem(await erase(client, clinic, customer_id), 409, "legal-hold")
    assert "Claim 2026/113" in refused["detail"]
    unchanged = (await client.get(url, headers=admin)).json()
    assert (unchanged["email"], unchanged["erased_at"]) == (details["email"], None)

    # Nor may anyone delete them meanwhile (they have no pets, so it would be allowed).
    assert_problem(await client.delete(url, headers=clinic.owner.headers), 409, "legal-hold")
    assert (await client.delete(f"{url}/legal-hold", headers=admin)).status_code == 204
    assert (await erase(client, clinic, customer_id)).status_code == 200

    # Final: not again, not changed, not held, its data not given back.
    assert_problem(await erase(client, clinic, customer_id), 409, "customer-erased")
    for method, path, body in (
        ("PATCH", url, {"email": details["email"]}),
        ("PATCH", url, {"consents": {"email": True}}),
        ("PUT", f"{url}/legal-hold", {"reason": "Too late"}),
        ("DELETE", f"{url}/legal-hold", None),
    ):
        answer = await client.request(method, path, json=body, headers=admin)
        assert_problem(answer, 409, "customer-erased")
    assert (await client.get(url, headers=admin)).json()["email"] is None


async def test_a_change_queued_behind_an_erasure_is_refused_not_written_over_it(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    """The erasure takes the row first; a change that read it before the erasure committed
    would, unless it locks the row too, write its values over the erased ones."""
    clinic = await world.clinic()
    customer_id = await add_customer(client, clinic, **person())
    name = person()["first_name"]
    url = f"{CUSTOMERS}/{customer_id}"
    async with databases.row_locked(database, "customers", customer_id) as waiting:
        erasing = asyncio.create_task(erase(client, clinic, customer_id))
        await waiting(1)
        changing = asyncio.create_task(
            client.patch(url, json={"first_name": name}, headers=clinic.owner.headers)
        )
        await waiting(2)
    assert (await erasing).status_code == 200
    assert_problem(await changing, 409, "customer-erased")
    assert await databases.tables_holding(database, (name,)) == []


async def test_erasures_racing_each_other_erase_once(
    client: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic()
    customer_id = await add_customer(client, clinic, **person(), consents={"sms": True})
    answers = await asyncio.gather(*(erase(client, clinic, customer_id) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "customer-erased")
    shown = await client.get(f"{CUSTOMERS}/{customer_id}", headers=clinic.owner.headers)
    assert shown.json()["consents"]["sms"]["granted"] is False
