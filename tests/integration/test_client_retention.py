"""Clients kept no longer than their clinic's policy (app/privacy/retention.py, ADR 0031): a
client with no activity for the clinic's years is erased by `vetify retention --apply`, as on
request; any activity since (a change, a visit booked even ahead, a record, a consent) keeps
them; a legal hold keeps them and is counted; a clinic without a policy keeps everyone; a dry
run changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid

import httpx
import pytest
from sqlalchemy import text

from app import cli
from app.audit.service import verify
from app.auth.models import Role
from app.kit.clock import utcnow
from app.kit.storage import ObjectMissing
from app.privacy import retention
from fixtures.factories import (
    AppointmentFactory,
    ConsentEventFactory,
    CustomerFactory,
    MedicalRecordFactory,
    PetFactory,
)
from tests.harness import browser
from tests.harness.api import assert_problem
from tests.harness.databases import Database
from tests.harness.world import ClinicWorld, World

YEARS = 2
LONG_AGO = dt.timedelta(days=3 * 365)
SLOTS = itertools.count()
PETS: dict[uuid.UUID, uuid.UUID] = {}
"""Each client of long ago's pet."""


async def client_of_long_ago(
    world: World, clinic: ClinicWorld, superuser_engine, **fields: object
) -> uuid.UUID:
    """A client, their pet (in :data:`PETS`), a visit and its record, all last touched three
    years ago."""
    customer = await world.make(clinic, CustomerFactory, **fields)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    PETS[customer.id] = pet.id
    vet = clinic.actors[Role.vet].user.id
    then = utcnow() - LONG_AGO - dt.timedelta(hours=next(SLOTS))  # one vet: a visit each
    await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=vet,
        starts_at=then,
        ends_at=then + dt.timedelta(minutes=20),
    )
    await world.make(clinic, MedicalRecordFactory, pet_id=pet.id, author_id=vet, visited_at=then)
    async with superuser_engine.begin() as connection:
        for table, column in (("customers", "id"), ("pets", "customer_id")):
            await connection.execute(
                text(f"UPDATE {table} SET created_at = :t, updated_at = :t WHERE {column} = :c"),
                {"t": then, "c": customer.id},
            )
        await connection.execute(
            text("UPDATE medical_records SET created_at = :t, updated_at = :t WHERE pet_id = :p"),
            {"t": then, "p": pet.id},
        )
    return uuid.UUID(str(customer.id))


async def names(superuser_engine, customer_id: uuid.UUID) -> tuple[str, str]:
    async with superuser_engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT first_name, last_name FROM customers WHERE id = :c"),
                {"c": customer_id},
            )
        ).one()
    return row.first_name, row.last_name


@pytest.fixture
async def clinics(
    client: httpx.AsyncClient, world: World, superuser_engine
) -> tuple[ClinicWorld, dict[str, uuid.UUID], uuid.UUID]:
    """A clinic whose policy is two years, with a client of each kind; and another clinic
    without a policy, with a client of long ago."""
    clinic = await world.clinic()
    # A security setting: a session that just passed its second factor (step-up) changes it.
    policy = await client.patch(
        "/api/v1/clinics/current",
        json={"inactive_client_years": YEARS},
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )
    assert policy.status_code == 200, policy.text
    assert policy.json()["inactive_client_years"] == YEARS
    clients = {
        kind: await client_of_long_ago(world, clinic, superuser_engine)
        for kind in ("inactive", "booked ahead", "consented lately", "held", "erased")
    }
    # A visit booked ahead, for the pet of long ago (nothing else of theirs is recent).
    await world.make(
        clinic,
        AppointmentFactory,
        pet_id=PETS[clients["booked ahead"]],
        vet_id=clinic.actors[Role.vet].user.id,
    )
    await world.make(clinic, ConsentEventFactory, customer_id=clients["consented lately"])
    clients["new"] = (await world.make(clinic, CustomerFactory)).id
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("UPDATE customers SET legal_hold = 'Claim 7' WHERE id = :c"),
            {"c": clients["held"]},
        )
        await connection.execute(
            text("UPDATE customers SET erased_at = now() - interval '1 year' WHERE id = :c"),
            {"c": clients["erased"]},
        )
    other = await world.clinic()
    unset = await client.patch(
        "/api/v1/clinics/current",
        json={"inactive_client_years": None},
        headers=browser.cookie_header(await world.step_up(other.owner)),
    )
    assert unset.status_code == 200, unset.text
    kept = await client_of_long_ago(world, other, superuser_engine)
    return clinic, clients, kept


async def test_a_clinics_policy_erases_its_inactive_clients_and_only_them(
    world: World, database: Database, superuser_engine, clinics
) -> None:
    clinic, clients, kept_elsewhere = clinics
    before = {kind: await names(superuser_engine, c) for kind, c in clients.items()}

    def apply(*, apply: bool) -> list[retention.Inactive]:
        return asyncio.run(
            retention.apply_policies(
                database.backup_url,
                database.owner_url,
                world.storage,
                utcnow(),
                apply=apply,
                batch=1,  # a batch per client, and one more that finds none
            )
        )

    # Inactive three years in a clinic of the default policy (seven): kept, no line for it.
    seven = await world.clinic()
    kept_for_seven = await client_of_long_ago(world, seven, superuser_engine)
    # The inactive client's export not yet downloaded: withdrawn with them, its file deleted.
    export = await world.client_export(clinic, clients["inactive"])

    counted = await asyncio.to_thread(apply, apply=False)
    assert counted == [retention.Inactive(clinic.id, YEARS, erased=1, held=1)]
    assert {kind: await names(superuser_engine, c) for kind, c in clients.items()} == before

    done = await asyncio.to_thread(apply, apply=True)

    assert done == [retention.Inactive(clinic.id, YEARS, erased=1, held=1)]
    assert await names(superuser_engine, clients["inactive"]) == ("Erased", "client")
    for kind in ("booked ahead", "consented lately", "held", "new"):
        assert await names(superuser_engine, clients[kind]) == before[kind], kind
    assert await names(superuser_engine, kept_elsewhere) != ("Erased", "client")
    assert await names(superuser_engine, kept_for_seven) != ("Erased", "client")
    with pytest.raises(ObjectMissing):
        await world.storage.get(export.storage_key, world.storage.staging_dir / "gone")
    async with superuser_engine.connect() as connection:
        events = await connection.execute(
            text("SELECT action, change FROM audit_events WHERE object_id = :c"),
            {"c": clients["inactive"]},
        )
        assert ("job:retention", "update") in {tuple(row) for row in events}
        assert (await verify(connection, clinic.id)).broken is None
    again = await asyncio.to_thread(apply, apply=True)
    assert again == [retention.Inactive(clinic.id, YEARS, erased=0, held=1)]


async def test_vetify_retention_reports_each_clinics_inactive_clients(
    cli_env, capsys, superuser_engine, clinics
) -> None:
    clinic, clients, _ = clinics
    await asyncio.to_thread(cli.main, ["retention"])
    said = capsys.readouterr().out
    assert (
        f"clinic {clinic.id}: 1 clients inactive for 2 years would be erased;"
        " 1 kept under a legal hold" in said
    )
    await asyncio.to_thread(cli.main, ["retention", "--apply"])
    assert f"clinic {clinic.id}: 1 clients inactive for 2 years erased" in capsys.readouterr().out
    assert await names(superuser_engine, clients["inactive"]) == ("Erased", "client")


async def test_a_policy_is_years_from_one_to_fifty_or_none_and_changes_only_on_step_up(
    client: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic()
    shown = await client.get("/api/v1/clinics/current", headers=clinic.owner.headers)
    assert shown.json()["inactive_client_years"] == 7  # the default
    # An API token (or a session not just stepped up) changes it neither way.
    for years in (1, 50, None):
        refused = await client.patch(
            "/api/v1/clinics/current",
            json={"inactive_client_years": years},
            headers=clinic.owner.headers,
        )
        assert_problem(refused, 403, "step-up-required")
    same = await client.patch(
        "/api/v1/clinics/current", json={"inactive_client_years": 7}, headers=clinic.owner.headers
    )
    assert same.status_code == 200  # as it is: no change, no step-up
    for wrong in (0, 51, 2.5, "7", True):
        refused = await client.patch(
            "/api/v1/clinics/current",
            json={"inactive_client_years": wrong},
            headers=clinic.owner.headers,
        )
        assert refused.status_code == 422, (wrong, refused.text)
