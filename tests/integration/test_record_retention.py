"""Medical records kept no longer than their clinic's policy (app/privacy/retention.py, ADR 0035):
a patient last seen longer ago than the clinic's years (at least its country's legal minimum) has
its records removed whole by `vetify retention --apply`, files too; a recent record or an
appointment since keeps them, and so does a legal hold on its owner; a dry run changes nothing;
a clinic cannot keep records for less than its country's minimum."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.audit.service import verify
from app.auth.models import Role
from app.db import migrate
from app.kit.clock import utcnow
from app.kit.storage import ObjectMissing
from app.privacy import retention
from fixtures.factories import (
    AppointmentFactory,
    CustomerFactory,
    MedicalRecordFactory,
    PetFactory,
    VaccinationFactory,
    create_addendum,
)
from tests.harness import browser
from tests.harness.api import assert_problem
from tests.harness.databases import APP_ROLE, Database
from tests.harness.world import ClinicWorld, World

LONG_AGO = dt.timedelta(days=3 * 365)
MINIMUMS = {"GB": 2, "*": 10}
"""The legal minimum of each country, as an operator would configure them (years)."""


async def patient(world: World, clinic: ClinicWorld, *, records: int = 1, **owner: object):
    """A pet with ``records`` medical records of three years ago (the first locked, with an
    addendum, a vaccination and a file)."""
    customer = await world.make(clinic, CustomerFactory, **owner)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    vet = clinic.actors[Role.vet].user.id
    then = utcnow() - LONG_AGO
    for n in range(records):
        record = await world.make(
            clinic,
            MedicalRecordFactory,
            pet_id=pet.id,
            author_id=vet,
            visited_at=then + dt.timedelta(hours=n),
            vaccinations=[VaccinationFactory.build()],
        )
        if n == 0:
            await world.made(clinic, create_addendum, record_id=record.id, author_id=vet)
            attachment = await world.attach(clinic, record.id)
            PATIENT_FILES[pet.id] = attachment.storage_key
    async with world.session(clinic.id) as session:
        await session.execute(
            text(
                "UPDATE medical_records SET signed_at = :t, locks_at = :t WHERE pet_id = :p"
                " AND visited_at = :t"
            ),
            {"t": then, "p": pet.id},
        )
    return pet, customer


PATIENT_FILES: dict[uuid.UUID, str] = {}


async def records_of(superuser_engine, pet_id: uuid.UUID) -> int:
    async with superuser_engine.connect() as connection:
        found = await connection.scalar(
            text("SELECT count(*) FROM medical_records WHERE pet_id = :p"), {"p": pet_id}
        )
        return int(found)


async def policy(client: httpx.AsyncClient, world: World, clinic: ClinicWorld, **body: object):
    answer = await client.patch(
        "/api/v1/clinics/current",
        json=body,
        headers=browser.cookie_header(await world.step_up(clinic.owner)),
    )
    return answer


@pytest.fixture
async def clinics(client: httpx.AsyncClient, world: World, superuser_engine):
    """A clinic in GB (minimum two years) with a patient of each kind; another clinic, of no
    country (ten years), with a patient of three years ago."""
    clinic = await world.clinic()
    assert (await policy(client, world, clinic, country="GB")).status_code == 200
    pets = {
        "past": (await patient(world, clinic, records=2))[0],
        "seen lately": (await patient(world, clinic))[0],
        "booked": (await patient(world, clinic))[0],
        "held": (await patient(world, clinic, legal_hold="Claim 7"))[0],
    }
    vet = clinic.actors[Role.vet].user.id
    await world.make(clinic, MedicalRecordFactory, pet_id=pets["seen lately"].id, author_id=vet)
    await world.make(clinic, AppointmentFactory, pet_id=pets["booked"].id, vet_id=vet)
    other = await world.clinic()
    pets["elsewhere"] = (await patient(world, other))[0]
    return clinic, other, pets


async def test_a_patient_last_seen_past_the_clinics_policy_loses_its_records_whole(
    world: World, database: Database, superuser_engine, clinics
) -> None:
    clinic, _, pets = clinics

    def run(*, apply: bool) -> list[retention.Expired]:
        return asyncio.run(
            retention.remove_records(
                database.backup_url,
                database.owner_url,
                world.storage,
                utcnow(),
                lambda country: MINIMUMS.get(country or "*", MINIMUMS["*"]),
                apply=apply,
                batch=1,
            )
        )

    before = {kind: await records_of(superuser_engine, pet.id) for kind, pet in pets.items()}
    counted = await asyncio.to_thread(run, apply=False)
    assert counted == [retention.Expired(clinic.id, 2, patients=1, records=2, held=1)]
    assert {k: await records_of(superuser_engine, p.id) for k, p in pets.items()} == before

    done = await asyncio.to_thread(run, apply=True)

    assert done == counted
    past = pets["past"].id
    assert await records_of(superuser_engine, past) == 0
    for kind in ("seen lately", "booked", "held", "elsewhere"):
        assert await records_of(superuser_engine, pets[kind].id) == before[kind], kind
    async with superuser_engine.connect() as connection:
        for table in ("vaccinations", "record_addenda", "attachments"):
            left = await connection.scalar(
                text(
                    f"SELECT count(*) FROM {table} WHERE record_id IN"
                    " (SELECT id FROM medical_records WHERE pet_id = :p)"
                    " OR tenant_id = :c AND record_id NOT IN (SELECT id FROM medical_records)"
                ),
                {"p": past, "c": clinic.id},
            )
            assert left == 0, table
        assert await connection.scalar(text("SELECT count(*) FROM pets WHERE id = :p"), {"p": past})
        deleted = await connection.execute(
            text(
                "SELECT object_type, count(*) FROM audit_events WHERE tenant_id = :c"
                " AND action = 'job:retention' AND change = 'delete' GROUP BY 1"
            ),
            {"c": clinic.id},
        )
        assert dict(deleted.all()) == {
            "medical_records": 2,
            "vaccinations": 2,
            "record_addenda": 1,
            "attachments": 1,
        }
        assert (await verify(connection, clinic.id)).broken is None
    with pytest.raises(ObjectMissing):
        await world.storage.get(PATIENT_FILES[past], world.storage.staging_dir / "gone")
    await world.storage.get(PATIENT_FILES[pets["held"].id], world.storage.staging_dir / "kept")
    again = await asyncio.to_thread(run, apply=True)
    assert again == [retention.Expired(clinic.id, 2, patients=0, records=0, held=1)]


async def test_vetify_retention_removes_records_past_the_configured_minimum(
    cli_env, capsys, superuser_engine, clinics, monkeypatch
) -> None:
    clinic, other, pets = clinics
    monkeypatch.setenv("VETIFY_RECORD_RETENTION_YEARS", "*=10,GB=2")
    await asyncio.to_thread(cli.main, ["retention"])
    said = capsys.readouterr().out
    assert (
        f"clinic {clinic.id}: 2 medical records of 1 patients last seen over 2 years ago would be"
        " removed; 1 patients kept under a legal hold" in said
    )
    assert str(other.id) not in said
    await asyncio.to_thread(cli.main, ["retention", "--apply"])
    assert "2 medical records of 1 patients last seen over 2 years ago removed" in (
        capsys.readouterr().out
    )
    assert await records_of(superuser_engine, pets["past"].id) == 0


async def test_a_clinic_keeps_records_at_least_its_countrys_minimum_and_changes_it_on_step_up(
    client: httpx.AsyncClient, world: World, superuser_engine
) -> None:
    clinic = await world.clinic()
    shown = (await client.get("/api/v1/clinics/current", headers=clinic.owner.headers)).json()
    assert (shown["country"], shown["record_retention_years"]) == (None, None)
    # The default minimum, for any country: ten years.
    short = await policy(client, world, clinic, record_retention_years=9)
    assert_problem(short, 422, "validation-error")
    assert short.json()["errors"][0]["loc"] == ["body", "record_retention_years"]
    assert "at least 10 years" in short.json()["detail"]
    longer = await policy(client, world, clinic, country="PT", record_retention_years=25)
    assert longer.status_code == 200, longer.text
    assert (longer.json()["country"], longer.json()["record_retention_years"]) == ("PT", 25)
    # Neither changes from an API token (nor a session not just stepped up).
    for body in ({"country": "ES"}, {"record_retention_years": 30}, {"country": None}):
        refused = await client.patch(
            "/api/v1/clinics/current", json=body, headers=clinic.owner.headers
        )
        assert_problem(refused, 403, "step-up-required")
    for wrong in ({"country": "pt"}, {"country": "PRT"}, {"record_retention_years": 101}):
        refused = await policy(client, world, clinic, **wrong)
        assert refused.status_code == 422, (wrong, refused.text)
    async with superuser_engine.connect() as connection:
        stored = await connection.execute(
            text("SELECT country, record_retention_years FROM clinics WHERE id = :c"),
            {"c": clinic.id},
        )
        assert tuple(stored.one()) == ("PT", 25)


async def test_only_the_owner_deletes_a_locked_record_and_the_downgrade_takes_that_back(
    world: World, database: Database, app_engine
) -> None:
    clinic = await world.clinic()
    pet, _ = await patient(world, clinic)  # its record locked
    config = migrate.alembic_config(database.owner_url, APP_ROLE)
    owner = create_async_engine(database.owner_url)

    async def delete(engine, *, expect_refused: bool) -> None:
        async with engine.connect() as connection:
            await connection.execute(
                text("SELECT set_config('app.tenant_id', :c, false)"), {"c": str(clinic.id)}
            )
            # Addenda are not held by the lock (insert-only for the service by its grants).
            tables = ("vaccinations", "attachments", "record_addenda", "medical_records")
            for table in tables if not expect_refused else tables[:2] + tables[3:]:
                of_pet = "SELECT id FROM medical_records WHERE pet_id = :p"
                where = "id IN" if table == "medical_records" else "record_id IN"
                statement = text(f"DELETE FROM {table} WHERE {where} ({of_pet})")
                if expect_refused:
                    with pytest.raises(DBAPIError, match=r"locked|permission denied"):
                        async with connection.begin_nested():
                            await connection.execute(statement, {"p": pet.id})
                else:
                    assert (await connection.execute(statement, {"p": pet.id})).rowcount > 0
            await connection.rollback()

    try:
        await delete(app_engine, expect_refused=True)  # the service: never
        await delete(owner, expect_refused=False)
        await asyncio.to_thread(command.downgrade, config, "0021")
        await delete(owner, expect_refused=True)
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
        await owner.dispose()
