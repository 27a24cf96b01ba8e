"""A client's export (issue 20, ADR 0030): built by the job, it holds exactly what the API shows
of the client and everything about their animals; stored sealed; downloaded once; gone when it
expires, when the client is erased, or after the build gave up."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.attachments.models import ScanStatus
from app.auth.models import Role
from app.kit.storage import ObjectMissing, staging_file
from app.privacy import exports
from app.settings import Settings
from fixtures import files
from fixtures.factories import (
    AppointmentFactory,
    MedicalRecordFactory,
    PetFactory,
    VaccinationFactory,
    WeightFactory,
)
from tests.harness.api import assert_problem
from tests.harness.queue import drain, due_now
from tests.harness.world import ClinicWorld, World

CUSTOMERS = "/api/v1/customers"
EXPORTS = "/api/v1/client-exports"


async def a_client(client: httpx.AsyncClient, clinic: ClinicWorld) -> str:
    created = await client.post(
        CUSTOMERS,
        json={
            "first_name": "Inês",
            "last_name": f"Export{uuid.uuid4().hex[:8]}",
            "email": f"ines.{uuid.uuid4().hex[:8]}@example.com",
            "phone": "+351912345678",
            "consents": {"email": True},
        },
        headers=clinic.owner.headers,
    )
    assert created.status_code == 201, created.text
    customer_id: str = created.json()["id"]
    return customer_id


async def ask(client: httpx.AsyncClient, clinic: ClinicWorld, customer_id: str) -> dict:
    asked = await client.post(
        f"{CUSTOMERS}/{customer_id}/export", headers=clinic.actors[Role.admin].headers
    )
    assert asked.status_code == 202, asked.text
    export: dict = asked.json()
    return export


async def shown(client: httpx.AsyncClient, clinic: ClinicWorld, path: str) -> object:
    answer = await client.get(path, headers=clinic.owner.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def stored_bytes(world: World, key: str) -> bytes:
    copy = staging_file(world.storage)
    await world.storage.get(key, copy)
    try:
        return copy.read_bytes()
    finally:
        copy.unlink()


async def storage_key(superuser_engine, export_id: str) -> str | None:
    async with superuser_engine.connect() as connection:
        key: str | None = await connection.scalar(
            text("SELECT storage_key FROM client_exports WHERE id = :id"), {"id": export_id}
        )
    return key


async def test_an_export_holds_what_the_api_shows_sealed_and_is_downloaded_once(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    customer_id = await a_client(client, clinic)
    withdrawn = await client.patch(
        f"{CUSTOMERS}/{customer_id}",
        json={"consents": {"email": False}},
        headers=clinic.owner.headers,
    )
    assert withdrawn.status_code == 200
    vet = clinic.actors[Role.vet].user.id
    pet = await world.make(clinic, PetFactory, customer_id=uuid.UUID(customer_id))
    await world.make(clinic, WeightFactory, pet_id=pet.id)
    appointment = await world.make(clinic, AppointmentFactory, pet_id=pet.id, vet_id=vet)
    record = await world.make(
        clinic,
        MedicalRecordFactory,
        pet_id=pet.id,
        author_id=vet,
        vaccinations=[VaccinationFactory.build()],
    )
    radiograph = await world.attach(clinic, record.id, files.png_with_comment("radiograph"))
    unscanned = await world.attach(clinic, record.id, scan_status=ScanStatus.pending)
    # Another client's pet of the same clinic is in no part of it.
    await world.make(clinic, PetFactory, customer_id=uuid.UUID(await a_client(client, clinic)))

    export = await ask(client, clinic, customer_id)
    assert (export["status"], export["customer_id"]) == ("pending", customer_id)
    url = f"{EXPORTS}/{export['id']}"
    admin = clinic.actors[Role.admin].headers
    assert_problem(await client.get(f"{url}/content", headers=admin), 409, "export-not-ready")

    await drain(settings)

    ready = (await client.get(url, headers=admin)).json()
    assert ready["status"] == "ready"
    sealed = await stored_bytes(world, await storage_key(superuser_engine, export["id"]))
    assert not sealed.startswith(b"PK")  # not a zip: sealed
    assert b"radiograph" not in sealed
    assert b"Export" not in sealed

    # Whole, whatever a Range asks: a part would use the one download up.
    downloaded = await client.get(f"{url}/content", headers={**admin, "Range": "bytes=0-9"})

    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.headers["content-type"] == "application/zip"
    assert downloaded.headers["cache-control"] == "no-store"
    assert downloaded.headers["accept-ranges"] == "none"
    digest = base64.b64encode(hashlib.sha256(downloaded.content).digest()).decode()
    assert downloaded.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert len(downloaded.content) == ready["size_bytes"]
    archive = zipfile.ZipFile(io.BytesIO(downloaded.content))

    def part(name: str) -> object:
        return json.loads(archive.read(name))

    assert part("customer.json") == await shown(client, clinic, f"{CUSTOMERS}/{customer_id}")
    assert [(e["channel"], e["granted"]) for e in part("consent-history.json")] == [
        ("email", True),
        ("email", False),
    ]
    assert part("pets.json") == [await shown(client, clinic, f"/api/v1/pets/{pet.id}")]
    assert part("weights.json") == await shown(client, clinic, f"/api/v1/pets/{pet.id}/weights")
    assert part("appointments.json") == [
        await shown(client, clinic, f"/api/v1/appointments/{appointment.id}")
    ]
    assert part("medical-records.json") == [
        await shown(client, clinic, f"/api/v1/medical-records/{record.id}")
    ]
    listed = {a["id"]: a for a in part("attachments.json")}
    taken = await client.get(
        f"/api/v1/attachments/{radiograph.id}/content", headers=clinic.owner.headers
    )
    assert archive.read(listed[str(radiograph.id)]["file"]) == taken.content
    left_out = listed[str(unscanned.id)]
    assert (left_out["file"], left_out["scan_status"]) == (None, "pending")
    assert "not been scanned" in left_out["left_out"]
    manifest = part("manifest.json")
    assert (manifest["customer_id"], manifest["clinic"]["id"]) == (customer_id, str(clinic.id))
    assert sorted(f["name"] for f in manifest["files"]) == sorted(
        n for n in archive.namelist() if n != "manifest.json"
    )
    for entry in manifest["files"]:
        assert hashlib.sha256(archive.read(entry["name"])).hexdigest() == entry["sha256"]

    # Once: then gone, its file deleted, and the trail says who took it.
    assert_problem(await client.get(f"{url}/content", headers=admin), 410, "export-gone")
    assert (await client.get(url, headers=admin)).json()["status"] == "downloaded"
    with pytest.raises(ObjectMissing):
        await stored_bytes(world, await storage_key(superuser_engine, export["id"]))
    trail = await client.get(
        "/api/v1/audit-events", params={"object_id": export["id"]}, headers=admin
    )
    assert [(e["action"], e["change"]) for e in trail.json()["items"]] == [
        ("customers:privacy", "insert"),
        ("job:privacy.build_export", "update"),
        ("customers:privacy", "read"),
    ]
    # Its expiry comes later and leaves a downloaded export as it is.
    await due_now(settings)
    await drain(settings)
    assert (await client.get(url, headers=admin)).json()["status"] == "downloaded"


async def test_an_export_not_downloaded_expires_and_its_file_goes(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    export = await ask(client, clinic, await a_client(client, clinic))
    await drain(settings)
    key = await storage_key(superuser_engine, export["id"])
    assert await stored_bytes(world, key)

    await due_now(settings)  # its expiry, scheduled when it was made ready, has come
    await drain(settings)

    url, admin = f"{EXPORTS}/{export['id']}", clinic.actors[Role.admin].headers
    assert (await client.get(url, headers=admin)).json()["status"] == "expired"
    assert_problem(await client.get(f"{url}/content", headers=admin), 410, "export-gone")
    with pytest.raises(ObjectMissing):
        await stored_bytes(world, key)


async def test_an_export_past_its_time_is_not_served_even_before_its_job_runs(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    export = await ask(client, clinic, await a_client(client, clinic))
    await drain(settings)
    async with superuser_engine.begin() as connection:  # its time is up; its job not run yet
        await connection.execute(
            text("UPDATE client_exports SET expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": export["id"]},
        )

    url, admin = f"{EXPORTS}/{export['id']}", clinic.actors[Role.admin].headers
    gone = assert_problem(await client.get(f"{url}/content", headers=admin), 410, "export-gone")
    assert "expired" in gone["detail"]
    assert (await client.get(url, headers=admin)).json()["status"] == "ready"  # the job's to do


async def test_erasing_a_client_withdraws_their_exports_built_or_not(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    customer_id = await a_client(client, clinic)
    built = await ask(client, clinic, customer_id)
    await drain(settings)
    waiting = await ask(client, clinic, customer_id)
    key = await storage_key(superuser_engine, built["id"])

    erased = await client.post(
        f"{CUSTOMERS}/{customer_id}/erase", headers=clinic.actors[Role.admin].headers
    )

    assert erased.status_code == 200, erased.text
    assert erased.json()["exports_withdrawn"] == 2
    await drain(settings)  # the pending one's build finds nothing to do
    admin = clinic.actors[Role.admin].headers
    for export in (built, waiting):
        url = f"{EXPORTS}/{export['id']}"
        assert (await client.get(url, headers=admin)).json()["status"] == "expired"
        assert_problem(await client.get(f"{url}/content", headers=admin), 410, "export-gone")
    with pytest.raises(ObjectMissing):
        await stored_bytes(world, key)
    assert await storage_key(superuser_engine, waiting["id"]) is None
    # And an erased client is exported no more.
    again = await client.post(f"{CUSTOMERS}/{customer_id}/export", headers=admin)
    assert_problem(again, 409, "customer-erased")


async def test_a_sealed_archive_moved_to_another_export_does_not_open(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine
) -> None:
    clinic = await world.clinic()
    first = await ask(client, clinic, await a_client(client, clinic))
    second = await ask(client, clinic, await a_client(client, clinic))
    await drain(settings)
    # The first's sealed file put where the second's was.
    moved = staging_file(world.storage)
    moved.write_bytes(await stored_bytes(world, await storage_key(superuser_engine, first["id"])))
    await world.storage.put(await storage_key(superuser_engine, second["id"]), moved)
    url, admin = f"{EXPORTS}/{second['id']}/content", clinic.actors[Role.admin].headers

    assert_problem(await client.get(url, headers=admin), 502, "export-corrupted")
    # Refused, not taken: it is still there to be looked into.
    status = (await client.get(f"{EXPORTS}/{second['id']}", headers=admin)).json()["status"]
    assert status == "ready"


async def test_a_build_that_keeps_failing_says_failed(
    client: httpx.AsyncClient, world: World, settings: Settings, tmp_path: Path
) -> None:
    clinic = await world.clinic()
    export = await ask(client, clinic, await a_client(client, clinic))
    nowhere = tmp_path / "not-a-directory"
    nowhere.write_text("a file where the storage's root should be")
    broken = settings.model_copy(update={"attachments_dir": nowhere})
    for _ in range(8):  # the first try and every retry
        await drain(broken)
        await due_now(settings)

    answer = await client.get(f"{EXPORTS}/{export['id']}", headers=clinic.owner.headers)
    assert answer.json()["status"] == "failed"


async def test_an_export_withdrawn_while_it_was_built_is_not_made_ready_and_its_file_goes(
    client: httpx.AsyncClient, world: World, settings: Settings, superuser_engine, monkeypatch
) -> None:
    """The build writes the archive in one transaction and marks the export ready in another:
    an erasure in between (which expires the client's exports) wins, and the file just stored
    is deleted at once."""
    clinic = await world.clinic()
    customer_id = await a_client(client, clinic)
    export = await ask(client, clinic, customer_id)
    written = exports._write_client

    async def erased_meanwhile(*args: object, **kwargs: object) -> None:
        await written(*args, **kwargs)
        async with superuser_engine.begin() as connection:
            await connection.execute(
                text("UPDATE client_exports SET status = 'expired' WHERE id = :id"),
                {"id": export["id"]},
            )

    monkeypatch.setattr(exports, "_write_client", erased_meanwhile)
    stored: list[str] = []
    put = type(world.storage).put

    async def noted(self, key: str, staged: Path) -> None:
        stored.append(key)
        await put(self, key, staged)

    monkeypatch.setattr(type(world.storage), "put", noted)

    await drain(settings)

    shown = await client.get(f"{EXPORTS}/{export['id']}", headers=clinic.owner.headers)
    assert shown.json()["status"] == "expired"
    assert await storage_key(superuser_engine, export["id"]) is None
    assert len(stored) == 1
    with pytest.raises(ObjectMissing):
        await stored_bytes(world, stored[0])
