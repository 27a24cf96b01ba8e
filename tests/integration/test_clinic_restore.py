"""One clinic's rows brought back from a copy of the database at an earlier time (ADR 0041):
what was deleted or changed since comes back, what was written since stays, no other clinic
moves, and what the service promised since (an erasure, a locked record, a file deleted) is
kept; every row it writes is in the clinic's trail, which still verifies; a dry run changes
nothing; and `vetify clinic restore --to TIME` does it from the embedded database's backups.
`vetify clinic export` writes the clinic's archive for an operator."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
import zipfile

import psycopg
import pytest
from sqlalchemy import text

from app import cli
from app.audit.service import verify
from app.auth.models import Role
from app.backup import service as backup
from app.db.embedded import DATABASE
from app.db.tenancy import InClinic
from app.kit.clock import utcnow
from app.privacy import restore
from app.privacy import service as privacy
from app.privacy.restore import Report, RestoreRefused
from app.settings import Settings
from fixtures import files
from fixtures.factories import (
    AppointmentFactory,
    PetFactory,
    create_customer,
    create_record,
)
from tests.harness import databases
from tests.harness.databases import Database
from tests.harness.live import until
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

        only = await asyncio.to_thread(
            _run, world, database, copy, clinic.id, apply=False, missing_only=True
        )
        assert after_counts(only) == {**after_counts(dry), "customers": (0, 0, 1)}

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


async def test_rows_that_cannot_come_back_are_refused_and_named_and_locked_records_stay_gone(
    world: World, database: Database, superuser_engine, app_engine
) -> None:
    clinic = await world.clinic()
    owner = await world.made(clinic, create_customer)
    pet = await world.make(clinic, PetFactory, customer_id=owner.id)
    vet, other_vet = clinic.actors[Role.vet].user.id, clinic.actors[Role.owner].user.id
    booked = await world.make(clinic, AppointmentFactory, pet_id=pet.id, vet_id=vet)
    with_gone_vet = await world.make(
        clinic,
        AppointmentFactory,
        pet_id=pet.id,
        vet_id=other_vet,
        starts_at=booked.starts_at + dt.timedelta(days=1),
        ends_at=booked.ends_at + dt.timedelta(days=1),
    )
    locked = await world.made(
        clinic,
        create_record,
        pet_id=pet.id,
        author_id=vet,
        locks_at=utcnow() - dt.timedelta(days=1),
    )
    copy = await _copy(database, superuser_engine, app_engine)
    try:
        await _sql(
            superuser_engine,
            "DELETE FROM appointments WHERE id IN (:a, :b)",
            a=booked.id,
            b=with_gone_vet.id,
        )
        # The slot taken since, and the other vet's membership gone.
        taken = await world.make(
            clinic,
            AppointmentFactory,
            pet_id=pet.id,
            vet_id=vet,
            starts_at=booked.starts_at,
            ends_at=booked.ends_at,
        )
        await _sql(
            superuser_engine,
            "DELETE FROM memberships WHERE tenant_id = :c AND user_id = :o",
            c=clinic.id,
            o=other_vet,
        )
        # Retention removed the locked record (as the schema's owner may).
        owner_engine = databases.engine(database.owner_url)
        try:
            async with owner_engine.begin() as connection:
                await connection.execute(
                    text("SELECT set_config('app.tenant_id', :c, true)"), {"c": str(clinic.id)}
                )
                await connection.execute(
                    text("DELETE FROM medical_records WHERE id = :i"), {"i": locked.id}
                )
        finally:
            await owner_engine.dispose()

        report = await asyncio.to_thread(_run, world, database, copy, clinic.id)

        by_table = {merged.table: merged for merged in report.tables}
        appointments = by_table["appointments"]
        assert (appointments.inserted, appointments.refused_count) == (0, 2)
        assert sorted(appointments.refused) == sorted([str(booked.id), str(with_gone_vet.id)])
        assert any(str(booked.id) in line for line in report.lines())
        records = by_table["medical_records"]
        assert (records.inserted, records.held, records.refused_count) == (0, 1, 0)
        remaining = await _sql(
            superuser_engine, "SELECT id FROM appointments WHERE tenant_id = :c", c=clinic.id
        )
        assert remaining == [(taken.id,)]
    finally:
        await databases.drop(copy)


async def test_a_restore_it_cannot_do_whole_is_refused_and_changes_nothing(
    world: World, database: Database, superuser_engine, app_engine
) -> None:
    clinic = await world.clinic()
    customer = await world.made(clinic, create_customer)
    copy = await _copy(database, superuser_engine, app_engine)
    copied = databases.engine(copy.superuser_url)
    try:
        await _sql(superuser_engine, "DELETE FROM customers WHERE id = :i", i=customer.id)
        newer = await world.clinic()
        with pytest.raises(RestoreRefused, match="is not in the copy: it did not exist yet"):
            await asyncio.to_thread(_run, world, database, copy, newer.id)
        with pytest.raises(RestoreRefused, match="is not in the database"):
            await asyncio.to_thread(_run, world, database, copy, uuid.uuid4())
        # A data key of the copy's retired since: what it sealed cannot be opened here.
        await _sql(
            copied,
            "INSERT INTO data_keys (scope, version, kek_id, wrapped)"
            " SELECT scope, version + 100, kek_id, wrapped FROM data_keys WHERE scope = :s",
            s=str(clinic.id),
        )
        with pytest.raises(RestoreRefused, match=r"data keys \[1\d\d\].*were deleted since"):
            await asyncio.to_thread(_run, world, database, copy, clinic.id)
        await _sql(copied, "DELETE FROM data_keys WHERE version > 100")
        await _sql(copied, "UPDATE alembic_version SET version_num = '0001'")
        with pytest.raises(RestoreRefused, match=r"the copy's schema is at \['0001'\]"):
            await asyncio.to_thread(_run, world, database, copy, clinic.id)
        assert await _count(superuser_engine, "customers", clinic.id) == 0
    finally:
        await copied.dispose()
        await databases.drop(copy)


def test_vetify_clinic_restore_from_the_embedded_databases_backups(
    tmp_path, monkeypatch, capsys
) -> None:
    data = tmp_path / "state"
    monkeypatch.setenv("VETIFY_DATA_DIR", str(data))
    settings = Settings()
    with cli.database(settings) as ready:
        asyncio.run(cli._seed_demo(ready, "http://docs"))
    capsys.readouterr()
    server = backup.embedded(settings).start()
    try:
        url = server.url(driver="")
        with psycopg.connect(url, dbname=DATABASE, autocommit=True) as connection:
            ((clinic, pet, visits),) = connection.execute(
                "SELECT p.tenant_id, p.id, count(a.id) FROM pets p JOIN appointments a"
                " ON a.pet_id = p.id GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1"
            ).fetchall()
            assert visits > 0
            before = connection.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(0.2)
            connection.execute("DELETE FROM appointments WHERE pet_id = %s", (pet,))
            connection.execute("SELECT pg_switch_wal()")
            until(
                "the delete's segment archived",
                lambda: connection.execute(
                    "SELECT last_archived_wal = pg_walfile_name(pg_current_wal_lsn() - 1)"
                    " FROM pg_stat_archiver"
                ).fetchone()[0],
                30,
            )
    finally:
        server.stop()

    cli.main(["clinic", "restore", str(clinic), "--to", before.isoformat()])
    dry = capsys.readouterr().out
    assert "would restore (a dry run: --apply restores)" in dry
    cli.main(["clinic", "restore", str(clinic), "--to", before.isoformat(), "--apply", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["applied"]
    assert report["source"].startswith("backup ")
    [appointments] = [t for t in report["tables"] if t["table"] == "appointments"]
    assert appointments["inserted"] == visits
    server.start()
    try:
        with psycopg.connect(server.url(driver=""), dbname=DATABASE) as connection:
            ((back,),) = connection.execute(
                "SELECT count(*) FROM appointments WHERE pet_id = %s", (pet,)
            ).fetchall()
        assert back == visits
    finally:
        server.stop()
    with pytest.raises(SystemExit, match=r"^vetify clinic restore: .*[Cc]onnect call failed"):
        cli.main(["clinic", "restore", str(clinic), "--from", "postgresql://nobody@127.0.0.1:9/x"])
    # The clinic's archive for an operator: a new file for this user alone, its read in the
    # trail; an unknown clinic or a file already there refused, nothing left behind.
    out = tmp_path / "exports" / "clinic.zip"
    out.parent.mkdir()
    cli.main(["clinic", "export", str(clinic), "--out", str(out)])
    assert f"clinic {clinic}: {out}" in capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        appointments = archive.read("tables/appointments.jsonl").decode().splitlines()
    assert manifest["clinic_id"] == str(clinic)
    assert len(appointments) >= visits
    with pytest.raises(SystemExit, match="File exists"):
        cli.main(["clinic", "export", str(clinic), "--out", str(out)])
    with pytest.raises(SystemExit, match="no clinic"):
        cli.main(["clinic", "export", str(uuid.uuid4()), "--out", str(tmp_path / "none.zip")])
    assert not (tmp_path / "none.zip").exists()
    server.start()
    try:
        with psycopg.connect(server.url(driver=""), dbname=DATABASE) as connection:
            ((noted,),) = connection.execute(
                "SELECT count(*) FROM audit_events WHERE tenant_id = %s AND change = 'read'"
                " AND object_type = 'clinics' AND action = 'vetify clinic export'",
                (clinic,),
            ).fetchall()
        assert noted == 1
    finally:
        server.stop()

    monkeypatch.setenv("VETIFY_DATABASE_URL", "postgresql://app@127.0.0.1:1/vetify")
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", "postgresql://owner@127.0.0.1:1/vetify")
    monkeypatch.setenv("VETIFY_BACKUP_DIR", str(tmp_path / "none"))
    with pytest.raises(SystemExit, match=r"no base backup in .*: restore the database to that"):
        cli.main(["clinic", "restore", str(clinic), "--to", before.isoformat()])
