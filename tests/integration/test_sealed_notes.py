"""Clinical free text sealed at rest (ADR 0033), against the real database: a record's SOAP
notes and its addenda stored as no plaintext, bound to their row and clinic and given back
whole; a locked record's notes sealed again under a new data key by the owner's rotation,
while the service's role still cannot change a locked record at all; and migration 0020 sealing
the text stored before it (a locked record's too) and opening it again on the way down."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.auth.models import Role
from app.db import migrate
from app.db.tenancy import InClinic, enter_tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.clock import utcnow
from app.kit.storage import storage_from
from app.records import service as records
from app.records.models import MedicalRecord
from tests.harness.databases import APP_ROLE
from tests.harness.world import ClinicWorld, World

RECORDS = "/api/v1/medical-records"
SOAP = ("subjective", "objective", "assessment", "plan")


pytestmark = pytest.mark.usefixtures("fresh_process_keys")


def notes(tag: str) -> dict[str, str]:
    """SOAP notes made of strings found nowhere else."""
    drawn = uuid.uuid4().hex[:10]
    return {field: f"{field} canary {tag} {drawn}" for field in SOAP}


async def written(
    client: httpx.AsyncClient, world: World, clinic: ClinicWorld, **fields: str
) -> dict:
    """A record of a new pet, written through the API by the clinic's vet."""
    record = await world.record(clinic)
    response = await client.patch(
        f"{RECORDS}/{record.id}", json=fields, headers=clinic.actors[Role.vet].headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def stored(engine: AsyncEngine, table: str, row_id: object) -> dict:
    async with engine.connect() as connection:
        found = await connection.execute(
            text(f"SELECT * FROM {table} WHERE id = :id"),
            {"id": row_id},
        )
        return dict(found.mappings().one())


async def test_notes_and_addenda_are_stored_sealed_and_given_back_whole(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic()
    soap = notes("whole")
    record = await written(client, world, clinic, **soap)
    assert {k: record[k] for k in SOAP} == soap
    addendum = f"addendum canary {uuid.uuid4().hex}"
    amended = await client.post(
        f"{RECORDS}/{record['id']}/addenda",
        json={"text": addendum},
        headers=clinic.actors[Role.vet].headers,
    )
    assert [a["text"] for a in amended.json()["addenda"]] == [addendum]

    row = await stored(superuser_engine, "medical_records", record["id"])
    assert set(SOAP) & set(row) == set()  # no plain column left
    assert sealing.version_of(row["notes_sealed"]) == 1
    assert not any(value.encode() in row["notes_sealed"] for value in soap.values())
    added = await stored(superuser_engine, "record_addenda", amended.json()["addenda"][0]["id"])
    assert "text" not in added
    assert addendum.encode() not in added["text_sealed"]
    shown = await client.get(f"{RECORDS}/{record['id']}", headers=clinic.owner.headers)
    assert {k: shown.json()[k] for k in SOAP} == soap
    assert shown.json()["addenda"][0]["text"] == addendum

    # One note changed: the others kept; all four emptied: nothing sealed at all.
    one = await client.patch(
        f"{RECORDS}/{record['id']}", json={"plan": "Changed"}, headers=clinic.owner.headers
    )
    assert {k: one.json()[k] for k in SOAP} == {**soap, "plan": "Changed"}
    kept = await stored(superuser_engine, "medical_records", record["id"])
    again = await client.patch(
        f"{RECORDS}/{record['id']}", json={"plan": "Changed"}, headers=clinic.owner.headers
    )
    assert again.status_code == 200, again.text
    # The same notes again: nothing sealed anew, nothing written.
    assert await stored(superuser_engine, "medical_records", record["id"]) == kept
    cleared = await client.patch(
        f"{RECORDS}/{record['id']}", json=dict.fromkeys(SOAP, ""), headers=clinic.owner.headers
    )
    assert {k: cleared.json()[k] for k in SOAP} == dict.fromkeys(SOAP, "")
    assert (await stored(superuser_engine, "medical_records", record["id"]))["notes_sealed"] is None


async def test_notes_moved_to_another_record_or_clinic_do_not_open(
    client, world: World, superuser_engine, app_engine
) -> None:
    ours, theirs = await world.clinic(), await world.clinic()
    first = await written(client, world, ours, **notes("first"))
    second = await written(client, world, ours, **notes("second"))
    foreign = await written(client, world, theirs, **notes("foreign"))
    moved = (await stored(superuser_engine, "medical_records", first["id"]))["notes_sealed"]
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("UPDATE medical_records SET notes_sealed = :s WHERE id = ANY(:ids)"),
            {"s": moved, "ids": [uuid.UUID(second["id"]), uuid.UUID(foreign["id"])]},
        )
    sessions = async_sessionmaker(app_engine, expire_on_commit=False)
    for clinic, target in ((ours, second["id"]), (theirs, foreign["id"])):
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic.id)
            record = await session.get(MedicalRecord, uuid.UUID(target))
            assert record is not None
            with pytest.raises(sealing.Unreadable, match="does not open here"):
                await records.notes_of(session, InClinic(clinic.id), record)


async def update_in(engine: AsyncEngine, clinic_id: uuid.UUID, sql: str, **values: object) -> int:
    """``sql`` run in ``clinic_id`` (row-level security holds every role but the superuser);
    how many rows it changed."""
    async with engine.begin() as connection:
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :c, true)"), {"c": str(clinic_id)}
        )
        return (await connection.execute(text(sql), values)).rowcount


async def _lock(engine: AsyncEngine, record_id: object) -> None:
    """Signed two days ago, so locked now (as the superuser: before the lock holds)."""
    then = utcnow() - dt.timedelta(days=2)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE medical_records SET signed_at = :then, locks_at = :locks WHERE id = :id"),
            {"then": then, "locks": then + records.LOCK_AFTER, "id": record_id},
        )


async def test_a_locked_records_notes_are_sealed_again_by_a_rotation_and_by_no_one_else(
    client, world: World, database, superuser_engine, app_engine, settings, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    clinic = await world.clinic()
    soap = notes("locked")
    record = await written(client, world, clinic, **soap)
    addendum = await client.post(
        f"{RECORDS}/{record['id']}/addenda",
        json={"text": "Rechecked: fine."},
        headers=clinic.actors[Role.vet].headers,
    )
    assert addendum.status_code == 201, addendum.text
    await _lock(superuser_engine, record["id"])

    # The service's role cannot touch a locked record's notes, even with a well-formed value.
    other = await written(client, world, clinic, **notes("other"))
    sealed = (await stored(superuser_engine, "medical_records", other["id"]))["notes_sealed"]
    with pytest.raises(DBAPIError, match="is locked"):
        await update_in(
            app_engine,
            clinic.id,
            "UPDATE medical_records SET notes_sealed = :s WHERE id = :id",
            s=sealed,
            id=record["id"],
        )

    done = await rotation.rotate_dek(
        database.owner_url,
        keys.wrapper_from(settings),
        storage_from(settings),
        str(clinic.id),
        retire=True,
    )

    assert (done.left, done.retired) == (0, [1])
    row = await stored(superuser_engine, "medical_records", record["id"])
    assert sealing.version_of(row["notes_sealed"]) == 2
    assert row["locks_at"] < utcnow()  # still locked: only the seal changed
    shown = await client.get(f"{RECORDS}/{record['id']}", headers=clinic.owner.headers)
    assert shown.json()["locked"] is True
    assert {k: shown.json()[k] for k in SOAP} == soap
    assert [a["text"] for a in shown.json()["addenda"]] == ["Rechecked: fine."]
    # A locked record's other columns stay out of even the owner's reach.
    owner = create_async_engine(database.owner_url)
    try:
        with pytest.raises(DBAPIError, match="is locked"):
            await update_in(
                owner,
                clinic.id,
                "UPDATE medical_records SET weight_kg = 1, notes_sealed = notes_sealed"
                " WHERE id = :id",
                id=record["id"],
            )
    finally:
        await owner.dispose()


async def test_migration_0020_seals_the_stored_text_and_its_downgrade_opens_it(
    client, world: World, database, superuser_engine, settings
) -> None:
    clinic = await world.clinic()
    wrapper = keys.wrapper_from(settings)
    config = migrate.alembic_config(database.owner_url, APP_ROLE, wrapper)
    ids = [(await world.record(clinic)).id for _ in range(3)]
    await asyncio.to_thread(command.downgrade, config, "0019")
    before = {ids[0]: notes("m1"), ids[1]: {**dict.fromkeys(SOAP, ""), "plan": "Only a plan"}}
    before[ids[2]] = dict.fromkeys(SOAP, "")
    addendum_id = uuid.uuid4()
    async with superuser_engine.begin() as connection:
        for record_id, soap in before.items():
            await connection.execute(
                text(
                    "UPDATE medical_records SET subjective = :subjective, objective = :objective,"
                    " assessment = :assessment, plan = :plan WHERE id = :id"
                ),
                {"id": record_id, **soap},
            )
        await connection.execute(
            text(
                "INSERT INTO record_addenda (id, tenant_id, record_id, author_id, text)"
                " SELECT :id, tenant_id, id, author_id, 'Before sealing' FROM medical_records"
                " WHERE id = :record"
            ),
            {"id": addendum_id, "record": ids[0]},
        )
    await _lock(superuser_engine, ids[0])

    with pytest.raises(RuntimeError, match="vetify migrate"):
        await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE)
    await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE, "head", wrapper)

    assert (await stored(superuser_engine, "medical_records", ids[2]))["notes_sealed"] is None
    for record_id, soap in before.items():
        shown = await client.get(f"{RECORDS}/{record_id}", headers=clinic.owner.headers)
        assert {k: shown.json()[k] for k in SOAP} == soap
    shown = await client.get(f"{RECORDS}/{ids[0]}", headers=clinic.owner.headers)
    assert (shown.json()["locked"], shown.json()["addenda"][0]["text"]) == (True, "Before sealing")

    await asyncio.to_thread(command.downgrade, config, "0019")
    async with superuser_engine.connect() as connection:
        for record_id, soap in before.items():
            back = await connection.execute(
                text(
                    "SELECT subjective, objective, assessment, plan FROM medical_records"
                    " WHERE id = :id"
                ),
                {"id": record_id},
            )
            assert dict(back.mappings().one()) == soap
        assert await connection.scalar(
            text("SELECT text FROM record_addenda WHERE id = :id"), {"id": addendum_id}
        ) == ("Before sealing")
