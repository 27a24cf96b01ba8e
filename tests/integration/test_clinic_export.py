"""The whole clinic as one archive (app/privacy/archive.py, ADR 0036): asked for by its owner,
paid up or not, built by the job with every table of the clinic's (sealed values opened, our own
secrets left out), its staff and every file; stored sealed; downloaded once; never found through
a client's export routes, nor by another clinic."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile

import httpx
import pytest
from sqlalchemy import text

from app.attachments.models import ScanStatus
from app.auth.models import Role
from app.keys import rotation
from app.privacy import archive
from fixtures import files
from fixtures.factories import PetFactory, create_addendum, create_record
from tests.harness.api import assert_problem
from tests.harness.queue import drain
from tests.harness.world import ClinicWorld, World

EXPORT = "/api/v1/clinics/current/export"
EXPORTS = "/api/v1/clinic-exports"
SECRET_LIKE = re.compile(r"hash|index|secret|password|storage_key|_sealed$")
CHECKED_IN_THE_OPEN = {
    ("audit_events", "hash"),
    ("audit_events", "prev_hash"),
    ("audit_heads", "hash"),
    ("audit_heads", "base_hash"),
}
"""Columns named like secrets that are not: the trail's chain, which the clinic can verify."""


async def filled(client: httpx.AsyncClient, world: World, mark: str) -> tuple[ClinicWorld, dict]:
    """A clinic whose client, record, addendum and file carry ``mark``; and what was made."""
    clinic = await world.clinic()
    created = await client.post(
        "/api/v1/customers",
        json={"first_name": "Ana", "last_name": mark, "email": f"{mark}@example.com"},
        headers=clinic.owner.headers,
    )
    assert created.status_code == 201, created.text
    customer_id = uuid.UUID(created.json()["id"])
    pet = await world.make(clinic, PetFactory, customer_id=customer_id)
    vet = clinic.actors[Role.vet].user.id
    record = await world.made(
        clinic, create_record, pet_id=pet.id, author_id=vet, assessment=f"{mark} otitis"
    )
    await world.made(
        clinic, create_addendum, record_id=record.id, author_id=vet, text=f"{mark} called"
    )
    content = files.png_with_comment(mark)
    attachment = await world.attach(clinic, record.id, content)
    # Not scanned yet: listed, its file left out, saying why.
    pending = await world.attach(clinic, record.id, scan_status=ScanStatus.pending)
    return clinic, {
        "customer": customer_id,
        "attachment": attachment,
        "content": content,
        "pending": pending,
    }


async def secret_hashes(superuser_engine, clinic_id: uuid.UUID) -> list[bytes]:
    async with superuser_engine.connect() as connection:
        found = await connection.scalars(
            text(
                "SELECT secret_hash FROM credentials WHERE tenant_id = :c UNION ALL"
                " SELECT secret_hash FROM invitations WHERE tenant_id = :c"
            ),
            {"c": clinic_id},
        )
        return [value for value in found if value]


async def test_the_owner_exports_the_whole_clinic_and_downloads_it_once(
    client: httpx.AsyncClient, world: World, settings, superuser_engine
) -> None:
    mark = f"Whole{uuid.uuid4().hex[:8]}"
    clinic, made = await filled(client, world, mark)
    other_mark = f"Other{uuid.uuid4().hex[:8]}"
    await filled(client, world, other_mark)
    owner = clinic.owner.headers

    asked = await client.post(EXPORT, headers=owner)
    assert asked.status_code == 202, asked.text
    export = asked.json()
    assert export["status"] == "pending"
    assert "customer_id" not in export
    await drain(settings)
    url = f"{EXPORTS}/{export['id']}"
    assert (await client.get(url, headers=owner)).json()["status"] == "ready"
    async with superuser_engine.connect() as connection:
        key = await connection.scalar(
            text("SELECT storage_key FROM client_exports WHERE id = :id"), {"id": export["id"]}
        )
    stored = world.storage.staging_dir / "stored"
    await world.storage.get(key, stored)
    assert mark.encode() not in stored.read_bytes()  # sealed
    stored.unlink()

    taken = await client.get(f"{url}/content", headers=owner)

    assert taken.status_code == 200, taken.text
    assert taken.headers["content-type"] == "application/zip"
    assert f"clinic-{clinic.id}.zip" in taken.headers["content-disposition"]
    zipped = zipfile.ZipFile(io.BytesIO(taken.content))
    manifest = json.loads(zipped.read("manifest.json"))
    assert manifest["format"] == archive.FORMAT
    assert manifest["clinic_id"] == str(clinic.id)
    for listed in manifest["files"]:
        if "left_out" in listed:
            continue
        body = zipped.read(listed["name"])
        assert (len(body), hashlib.sha256(body).hexdigest()) == (
            listed["bytes"],
            listed["sha256"],
        ), listed["name"]
    names = set(zipped.namelist())
    assert {f"tables/{t.name}.jsonl" for t in archive.tables()} <= names
    everything = b"".join(zipped.read(name) for name in names)
    assert other_mark.encode() not in everything
    hashes = await secret_hashes(superuser_engine, clinic.id)
    assert hashes
    for secret in hashes:
        assert secret not in everything
        assert secret.hex().encode() not in everything

    def rows(table: str) -> list[dict]:
        return [json.loads(line) for line in zipped.read(f"tables/{table}.jsonl").splitlines()]

    [clinic_row] = rows("clinics")
    assert clinic_row["id"] == str(clinic.id)
    assert "index_key_sealed" not in clinic_row
    assert "index_key" not in clinic_row
    [customer] = rows("customers")
    assert json.loads(customer["contact"])["email"] == f"{mark}@example.com"
    assert "email_index" not in customer
    assert "contact_sealed" not in customer
    [record] = rows("medical_records")
    assert json.loads(record["notes"])["assessment"] == f"{mark} otitis"
    assert rows("record_addenda")[0]["text"] == f"{mark} called"
    attachment = made["attachment"]
    attached = rows("attachments")
    assert {row["id"] for row in attached} == {str(attachment.id), str(made["pending"].id)}
    assert not any("storage_key" in row for row in attached)
    assert zipped.read(f"attachments/{attachment.id}/{attachment.filename}") == made["content"]
    pending = made["pending"]
    [left_out] = [
        f for f in manifest["files"] if f["name"].startswith(f"attachments/{pending.id}/")
    ]
    assert "not been scanned" in left_out["left_out"]
    assert left_out["name"] not in names
    assert {row["email"] for row in json.loads(zipped.read("staff.json"))} == {
        actor.user.email for actor in clinic.actors.values()
    }
    assert rows("audit_events"), "the clinic's trail is in it"
    assert_problem(await client.get(f"{url}/content", headers=owner), 410, "export-gone")
    async with superuser_engine.connect() as connection:
        read = await connection.scalar(
            text("SELECT count(*) FROM audit_events WHERE object_id = :id AND change = 'read'"),
            {"id": export["id"]},
        )
        assert read == 1


async def test_each_kind_of_export_is_found_only_through_its_own_routes(
    client: httpx.AsyncClient, world: World
) -> None:
    clinic, made = await filled(client, world, f"Kind{uuid.uuid4().hex[:8]}")
    whole = await world.clinic_export(clinic)
    of_client = await world.client_export(clinic, made["customer"])
    owner = clinic.owner.headers

    for path in (
        f"/api/v1/client-exports/{whole.id}",
        f"/api/v1/client-exports/{whole.id}/content",
    ):
        assert_problem(await client.get(path, headers=owner), 404, "not-found")
    for path in (f"{EXPORTS}/{of_client.id}", f"{EXPORTS}/{of_client.id}/content"):
        assert_problem(await client.get(path, headers=owner), 404, "not-found")
    # An admin answers a client's request; the whole clinic is the owner's.
    admin = clinic.actors[Role.admin].headers
    assert_problem(await client.post(EXPORT, headers=admin), 403, "forbidden")
    assert (await client.get(f"{EXPORTS}/{whole.id}", headers=owner)).status_code == 200


async def test_a_clinic_that_stopped_paying_still_takes_its_data_away(
    client: httpx.AsyncClient, world: World, settings
) -> None:
    clinic = await world.clinic((Role.owner,))
    async with world.session(clinic.id) as session:
        await session.execute(
            text("UPDATE billing_accounts SET trial_ends_at = now() - interval '1 minute'")
        )
    assert_problem(
        await client.post("/api/v1/customers", json={}, headers=clinic.owner.headers),
        402,
        "payment-required",
    )

    asked = await client.post(EXPORT, headers=clinic.owner.headers)

    assert asked.status_code == 202, asked.text
    await drain(settings)
    taken = await client.get(
        f"{EXPORTS}/{asked.json()['id']}/content", headers=clinic.owner.headers
    )
    assert taken.status_code == 200


@pytest.mark.parametrize("table", archive.tables(), ids=lambda t: t.name)
def test_every_column_is_exported_opened_or_left_out_on_purpose(table) -> None:
    sealed = {(c.table, c.column) for c in rotation.SEALED}
    for column in table.c:
        place = (table.name, column.name)
        if column.name.endswith("_sealed"):
            assert place in sealed or place in archive.LEFT_OUT, place
        elif SECRET_LIKE.search(column.name):
            assert place in archive.LEFT_OUT or place in CHECKED_IN_THE_OPEN, (
                f"{place} looks like a secret: leave it out of the clinic's archive"
                " (archive.LEFT_OUT), or say why it is none (CHECKED_IN_THE_OPEN)"
            )
