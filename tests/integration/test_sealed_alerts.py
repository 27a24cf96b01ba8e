"""Pets' alerts sealed at rest (ADR 0038), against the real database: stored as no plaintext,
bound to their row and clinic, given back whole in a pet, a list and a change; an unchanged
PATCH seals nothing anew; rotation seals them again; migration 0025 seals the alerts stored
before it and opens them again on the way down."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import migrate
from app.keys import rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.storage import storage_from
from fixtures.factories import CustomerFactory
from tests.harness.api import assert_problem
from tests.harness.databases import APP_ROLE
from tests.harness.world import ClinicWorld, World

URL = "/api/v1/pets"

pytestmark = pytest.mark.usefixtures("fresh_process_keys")


def canaries(tag: str) -> list[str]:
    drawn = uuid.uuid4().hex[:10]
    return [f"bites {tag} {drawn}", f"allergic {tag} {drawn}"]


async def registered(
    client: httpx.AsyncClient, world: World, clinic: ClinicWorld, alerts: list[str]
) -> dict:
    customer = await world.make(clinic, CustomerFactory)
    response = await client.post(
        URL,
        json={"customer_id": str(customer.id), "name": "Rex", "species": "dog", "alerts": alerts},
        headers=clinic.owner.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def sealed_of(engine: AsyncEngine, pet_id: object) -> bytes | None:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(text("SELECT * FROM pets WHERE id = :id"), {"id": pet_id}))
            .mappings()
            .one()
        )
    assert "alerts" not in row
    return row["alerts_sealed"]


async def test_alerts_are_stored_sealed_and_given_back_whole(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic()
    alerts = canaries("whole")
    pet = await registered(client, world, clinic, alerts)
    assert pet["alerts"] == alerts

    sealed = await sealed_of(superuser_engine, pet["id"])
    assert sealed is not None
    for alert in alerts:
        assert alert.encode() not in sealed
    headers = clinic.owner.headers
    assert (await client.get(f"{URL}/{pet['id']}", headers=headers)).json()["alerts"] == alerts
    listed = (await client.get(URL, headers=headers)).json()["items"]
    assert [p["alerts"] for p in listed if p["id"] == pet["id"]] == [alerts]
    unchanged = await client.patch(f"{URL}/{pet['id']}", json={"alerts": alerts}, headers=headers)
    assert unchanged.json()["alerts"] == alerts
    assert await sealed_of(superuser_engine, pet["id"]) == sealed  # nothing sealed anew
    cleared = await client.patch(f"{URL}/{pet['id']}", json={"alerts": []}, headers=headers)
    assert cleared.json()["alerts"] == []
    assert await sealed_of(superuser_engine, pet["id"]) is None


async def test_alerts_moved_to_another_pet_or_clinic_do_not_open(
    client, world: World, superuser_engine
) -> None:
    clinic, elsewhere = await world.clinic(), await world.clinic()
    ours = await registered(client, world, clinic, canaries("ours"))
    other = await registered(client, world, clinic, canaries("other"))
    theirs = await registered(client, world, elsewhere, canaries("theirs"))
    sealed = await sealed_of(superuser_engine, ours["id"])

    for target, holder in ((other, clinic), (theirs, elsewhere)):
        async with superuser_engine.begin() as connection:
            await connection.execute(
                text("UPDATE pets SET alerts_sealed = :s WHERE id = :id"),
                {"s": sealed, "id": target["id"]},
            )
        shown = await client.get(f"{URL}/{target['id']}", headers=holder.owner.headers)
        assert_problem(shown, 500, "sealed-value-unreadable")


async def test_rotation_seals_alerts_again(
    client, world: World, database, settings, superuser_engine, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    clinic = await world.clinic()
    alerts = canaries("rotated")
    pet = await registered(client, world, clinic, alerts)

    done = await rotation.rotate_dek(
        database.owner_url,
        keys.wrapper_from(settings),
        storage_from(settings),
        str(clinic.id),
        retire=False,
    )

    assert done.resealed >= 1
    assert sealing.version_of(await sealed_of(superuser_engine, pet["id"])) == done.version
    got = await client.get(f"{URL}/{pet['id']}", headers=clinic.owner.headers)
    assert got.json()["alerts"] == alerts


async def test_migration_0025_seals_the_alerts_stored_before_and_its_downgrade_opens_them(
    client, world: World, database, settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    alerts = canaries("migrated")
    pet = await registered(client, world, clinic, alerts)
    bare = await registered(client, world, clinic, [])
    config = migrate.alembic_config(database.owner_url, APP_ROLE, keys.wrapper_from(settings))

    await asyncio.to_thread(command.downgrade, config, "0024")
    try:
        async with superuser_engine.connect() as connection:
            stored = dict(
                (
                    await connection.execute(
                        text("SELECT id::text, alerts FROM pets WHERE id IN (:a, :b)"),
                        {"a": pet["id"], "b": bare["id"]},
                    )
                ).all()
            )
        assert stored == {pet["id"]: alerts, bare["id"]: []}
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")

    sealed = await sealed_of(superuser_engine, pet["id"])
    assert sealed is not None
    assert alerts[0].encode() not in sealed
    assert await sealed_of(superuser_engine, bare["id"]) is None
    got = await client.get(f"{URL}/{pet['id']}", headers=clinic.owner.headers)
    assert got.json()["alerts"] == alerts
