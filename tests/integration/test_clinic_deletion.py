"""A clinic that left, deleted (app/privacy/departure.py, ADR 0037): once its subscription ended
(or its trial, with none begun) longer ago than VETIFY_CLINIC_DELETION_DAYS, `vetify retention
--apply` shreds its data keys, deletes its rows and then its files, and says what went; its
trail stays and still verifies; a clinic still a customer, or not gone long enough, is not
touched; a dry run counts; a run that failed half-way is finished by the next."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

import pytest
from sqlalchemy import text

from app import cli
from app.audit.service import verify
from app.auth.models import Role
from app.kit.clock import utcnow
from app.kit.storage import ObjectMissing, StorageUnavailable
from app.privacy import departure
from fixtures import files
from fixtures.factories import PetFactory, create_customer, create_record
from tests.harness.databases import Database
from tests.harness.world import ClinicWorld, World

AFTER = dt.timedelta(days=90)


async def clinic_with_data(world: World) -> tuple[ClinicWorld, str]:
    """A clinic with a client, a pet, a sealed record and a file; the file's storage key."""
    clinic = await world.clinic()
    customer = await world.made(clinic, create_customer)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    record = await world.made(
        clinic, create_record, pet_id=pet.id, author_id=clinic.actors[Role.vet].user.id
    )
    attachment = await world.attach(clinic, record.id, files.png_with_comment("leaving"))
    return clinic, attachment.storage_key


async def left(superuser_engine, clinic: ClinicWorld, days: int, **account: object) -> None:
    """The clinic's subscription canceled, its last period over ``days`` ago."""
    values = {
        "status": "canceled",
        "stripe_subscription_id": "sub_gone",
        "current_period_end": utcnow() - dt.timedelta(days=days),
        **account,
    }
    sets = ", ".join(f"{name} = :{name}" for name in values)
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE billing_accounts SET {sets} WHERE tenant_id = :c"),
            {**values, "c": clinic.id},
        )


async def counts(superuser_engine, clinic_id: uuid.UUID) -> dict[str, int]:
    async with superuser_engine.connect() as connection:
        found = {}
        for table in [*departure.scoped_tables(), *departure.KEPT]:
            name = table if isinstance(table, str) else table.name
            found[name] = await connection.scalar(
                text(f"SELECT count(*) FROM {name} WHERE tenant_id = :c"), {"c": clinic_id}
            )
        found["data_keys"] = await connection.scalar(
            text("SELECT count(*) FROM data_keys WHERE scope = :c"), {"c": str(clinic_id)}
        )
        return found


def run(world: World, database: Database, *, apply: bool) -> list[departure.Departed]:
    return asyncio.run(
        departure.delete_departed(
            database.backup_url, database.owner_url, world.storage, utcnow(), AFTER, apply=apply
        )
    )


async def test_a_clinic_gone_long_enough_is_shredded_then_its_rows_then_its_files(
    world: World, database: Database, superuser_engine
) -> None:
    gone, gone_file = await clinic_with_data(world)
    await left(superuser_engine, gone, days=91)
    recent, recent_file = await clinic_with_data(world)
    await left(superuser_engine, recent, days=89)
    trial, _ = await clinic_with_data(world)
    async with superuser_engine.begin() as connection:  # its own trial, over long ago
        await connection.execute(
            text(
                "UPDATE billing_accounts SET status = 'trialing', trial_ends_at = :t,"
                " stripe_subscription_id = NULL WHERE tenant_id = :c"
            ),
            {"t": utcnow() - dt.timedelta(days=200), "c": trial.id},
        )
    unpaid, _ = await clinic_with_data(world)  # may still pay: read-only, never gone
    await left(superuser_engine, unpaid, days=400, status="unpaid")
    before = await counts(superuser_engine, gone.id)
    assert before["customers"] == 1
    assert before["data_keys"] >= 1

    counted = await asyncio.to_thread(run, world, database, apply=False)
    assert [d.clinic_id for d in counted] == sorted([gone.id, trial.id])
    assert await counts(superuser_engine, gone.id) == before
    [dry] = [d for d in counted if d.clinic_id == gone.id]
    assert dry.rows["customers"] == 1
    assert dry.files is None

    done = await asyncio.to_thread(run, world, database, apply=True)

    [report] = [d for d in done if d.clinic_id == gone.id]
    assert report.keys == before["data_keys"]
    assert report.files == 1
    assert report.rows == {name: before[name] for name in report.rows}
    after = await counts(superuser_engine, gone.id)
    assert {name for name, count in after.items() if count} == {"audit_events", "audit_heads"}
    with pytest.raises(ObjectMissing):
        await world.storage.get(gone_file, world.storage.staging_dir / "gone")
    await world.storage.get(recent_file, world.storage.staging_dir / "kept")
    async with superuser_engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT name, deleted_at, index_key_sealed FROM clinics WHERE id = :c"),
                {"c": gone.id},
            )
        ).one()
        assert row.name == departure.DELETED_NAME
        assert row.deleted_at is not None
        assert row.index_key_sealed is None
        assert (await verify(connection, gone.id)).broken is None  # its trail, whole
    for kept in (recent, unpaid):
        assert (await counts(superuser_engine, kept.id))["customers"] == 1
    assert await asyncio.to_thread(run, world, database, apply=True) == []  # once


async def test_a_deletion_that_fails_half_way_leaves_nothing_readable_and_the_next_run_ends_it(
    world: World, database: Database, superuser_engine, monkeypatch
) -> None:
    gone, gone_file = await clinic_with_data(world)
    await left(superuser_engine, gone, days=365)

    async def storage_away(_: uuid.UUID) -> int:
        raise StorageUnavailable("File storage is not answering; try again shortly.")

    monkeypatch.setattr(type(world.storage), "delete_clinic", lambda self, c: storage_away(c))
    with pytest.raises(StorageUnavailable):
        await asyncio.to_thread(run, world, database, apply=True)
    monkeypatch.undo()

    half = await counts(superuser_engine, gone.id)
    assert half["data_keys"] == 0  # shredded first: its file, still stored, opens no more
    assert half["customers"] == 0
    assert half["billing_accounts"] == 1  # not done: the next run finds it again
    [report] = [
        d
        for d in await asyncio.to_thread(run, world, database, apply=True)
        if d.clinic_id == gone.id
    ]
    assert (report.keys, sum(report.rows.values()), report.files) == (0, 0, 1)
    with pytest.raises(ObjectMissing):
        await world.storage.get(gone_file, world.storage.staging_dir / "gone")


async def test_vetify_retention_reports_a_departed_clinic(
    world: World, cli_env, capsys, superuser_engine, monkeypatch
) -> None:
    gone, _ = await clinic_with_data(world)
    await left(superuser_engine, gone, days=40)
    monkeypatch.setenv("VETIFY_CLINIC_DELETION_DAYS", "30")
    await asyncio.to_thread(cli.main, ["retention"])
    said = capsys.readouterr().out
    assert f"clinic {gone.id} (left " in said
    assert "would be deleted:" in said
    await asyncio.to_thread(cli.main, ["retention", "--apply"])
    said = capsys.readouterr().out
    assert f"clinic {gone.id} (left " in said
    assert "): deleted:" in said
    assert "customers 1" in said
    assert re.search(r"data keys shredded; \d+ rows \(.*\); \d+ files", said)
