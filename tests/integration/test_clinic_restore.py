"""One clinic's rows brought back from a copy of the database at an earlier time (ADR 0041):
what was deleted or changed since comes back, what was written since stays, no other clinic
moves, and what the service promised since (an erasure, a locked record, a file deleted) is
kept; every row it writes is in the clinic's trail, which still verifies; a dry run changes
nothing; and `vetify clinic restore --to TIME` does it from the embedded database's backups."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from sqlalchemy import text

from app.audit.service import verify
from app.auth.models import Role
from app.db.tenancy import InClinic
from app.privacy import restore
from app.privacy import service as privacy
from app.privacy.restore import Report
from fixtures import files
from fixtures.factories import (
    AppointmentFactory,
    PetFactory,
    create_customer,
    create_record,
)
from tests.harness import databases
from tests.harness.databases import Database
from tests.harness.world import World


async def _sql(engine, query: str, **values: object) -> list:
    async with engine.begin() as connection:
        result = await connection.execute(text(query), values)
        return result.all() if result.returns_rows else []


async def _copy(database: Database, *engines) -> Database:
    """The database as it is now, as a restore to this time would give it (nobody may be
    connected to it while it is copied)."""
    for engine in engines:
        await engine.dispose()
    return await databases.clone(database.server, prefix="copy", template=database.name)


def _run(world: World, database: Database, copy: Database, clinic: uuid.UUID, **how) -> Report:
    return asyncio.run(
        restore.restore_clinic(
            database.owner_url,
            copy.owner_url,
            "the copy",
            clinic,
            world.storage,
            missing_only=how.get("missing_only", False),
            apply=how.get("apply", True),
        )
    )


async def _count(superuser_engine, table: str, clinic: uuid.UUID) -> int:
    [(count,)] = await _sql(
        superuser_engine, f"SELECT count(*) FROM {table} WHERE tenant_id = :c", c=clinic
    )
    return int(count)


async def test_a_clinics_deletions_and_edits_come_back_and_nothing_else_moves(
    world: World, database: Database, superuser_engine, app_engine, client
) -> None:
    clinic, other = await world.clinic(), await world.clinic()
    kept = await world.made(clinic, create_customer, email="kept@example.org")
    edited = await world.made(clinic, create_customer, email="edited@example.org")
    to_erase = await world.made(clinic, create_customer, email="erased@example.org")
    pet = await world.make(clinic, PetFactory, customer_id=kept.id)
    deleted_pet = await world.make(clinic, PetFactory, customer_id=kept.id)
    erased_pet = await world.make(clinic, PetFactory, customer_id=to_erase.id)
    vet = clinic.actors[Role.vet].user.id
    visit = await world.make(clinic, AppointmentFactory, pet_id=deleted_pet.id, vet_id=vet)
    erased_visit = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=erased_pet.id,
        vet_id=vet,
        starts_at=visit.starts_at + dt.timedelta(hours=2),
        ends_at=visit.ends_at + dt.timedelta(hours=2),
    )
    record = await world.made(
        clinic, create_record, pet_id=pet.id, author_id=clinic.actors[Role.vet].user.id
    )
    file_kept = await world.attach(clinic, record.id, files.png_with_comment("kept"))
    file_gone = await world.attach(clinic, record.id, files.png_with_comment("gone"))
    theirs = await world.made(other, create_customer, email="theirs@example.org")
    trail_then = await _count(superuser_engine, "audit_events", clinic.id)

    copy = await _copy(database, superuser_engine, app_engine)
    try:
        # The mistake, and the clinic's work since.
        await _sql(superuser_engine, "DELETE FROM appointments WHERE id = :i", i=visit.id)
        await _sql(superuser_engine, "DELETE FROM pets WHERE id = :i", i=deleted_pet.id)
        await _sql(
            superuser_engine, "UPDATE customers SET first_name = 'Wrong' WHERE id = :i", i=edited.id
        )
        await _sql(superuser_engine, "DELETE FROM attachments WHERE record_id = :i", i=record.id)
        await world.storage.delete(file_gone.storage_key)  # as the service deletes a file
        async with world.session(clinic.id) as session:
            await privacy.erase(session, InClinic(clinic.id), to_erase.id, None)
        since = await world.made(clinic, create_customer, email="since@example.org")
        await _sql(
            superuser_engine,
            "UPDATE customers SET first_name = 'Theirs' WHERE id = :i",
            i=theirs.id,
        )
        before = {
            table: await _count(superuser_engine, table, clinic.id)
            for table in ("customers", "pets", "appointments", "attachments", "audit_events")
        }

        dry = await asyncio.to_thread(_run, world, database, copy, clinic.id, apply=False)
        assert after_counts(dry) == {
            "customers": (0, 1, 1),  # inserted, updated, left as is (the erased client)
            "pets": (1, 0, 0),
            "appointments": (1, 0, 1),
            "attachments": (1, 0, 1),  # the one whose file is gone stays gone
        }
        assert {
            table: await _count(superuser_engine, table, clinic.id) for table in before
        } == before

        report = await asyncio.to_thread(_run, world, database, copy, clinic.id)
        assert after_counts(report) == after_counts(dry)
        assert report.applied
        by_table = {merged.table: merged for merged in report.tables}
        assert by_table["customers"].newer == 1  # the client added since, kept

        for path, expected in (
            (f"/api/v1/pets/{deleted_pet.id}", 200),
            (f"/api/v1/appointments/{visit.id}", 200),
            (f"/api/v1/attachments/{file_kept.id}", 200),
            (f"/api/v1/attachments/{file_gone.id}", 404),
            (f"/api/v1/customers/{since.id}", 200),
        ):
            response = await client.get(path, headers=clinic.owner.headers)
            assert response.status_code == expected, (path, response.text)
        found = await client.get(
            "/api/v1/customers", params={"q": "edited@example.org"}, headers=clinic.owner.headers
        )
        [back] = found.json()["items"]
        assert (back["id"], back["first_name"]) == (str(edited.id), edited.first_name)
        erased = await client.get(f"/api/v1/customers/{to_erase.id}", headers=clinic.owner.headers)
        assert erased.json()["first_name"] == "Erased"
        assert erased.json().get("email") is None
        [(reason, status)] = await _sql(
            superuser_engine,
            "SELECT reason, status FROM appointments WHERE id = :i",
            i=erased_visit.id,
        )
        assert (reason, status) == (None, "cancelled")  # as the erasure left it
        [(name,)] = await _sql(
            superuser_engine, "SELECT first_name FROM customers WHERE id = :i", i=theirs.id
        )
        assert name == "Theirs"  # another clinic's work since: untouched

        # Every row written is an event of the clinic's trail, which still verifies.
        restored = await _sql(
            superuser_engine,
            "SELECT object_type, change, fields FROM audit_events"
            " WHERE tenant_id = :c AND action = 'vetify clinic restore' ORDER BY seq",
            c=clinic.id,
        )
        assert sorted((kind, change) for kind, change, _ in restored) == sorted(
            [
                ("appointments", "insert"),
                ("attachments", "insert"),
                ("customers", "update"),
                ("pets", "insert"),
            ]
        )
        assert [fields for kind, change, fields in restored if change == "update"] == [
            ["first_name"]
        ]
        assert await _count(superuser_engine, "audit_events", clinic.id) == before[
            "audit_events"
        ] + len(restored)
        assert trail_then < before["audit_events"]
        async with superuser_engine.connect() as connection:
            verdict = await verify(connection, clinic.id)
        assert verdict.broken is None
    finally:
        await databases.drop(copy)


def after_counts(report: Report) -> dict[str, tuple[int, int, int]]:
    """Per table changed or held: inserted, updated, left as is."""
    return {
        merged.table: (merged.inserted, merged.updated, merged.held)
        for merged in report.tables
        if merged.inserted or merged.updated or merged.held
    }
