"""Files sealed at rest (ADR 0034): an attachment's bytes are stored sealed with its clinic's data
key and bound to the attachment, served as uploaded, refused when moved or their key shredded;
`vetify keys rotate-dek` seals them (and client exports) again while downloads go on, seals
those stored in the clear before, and retires no key a file still names."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from app.auth.models import Role
from app.db import migrate
from app.keys import rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.storage import Storage, staging_file
from app.settings import Settings
from fixtures import files
from tests.harness.api import assert_problem
from tests.harness.databases import APP_ROLE, lock_requests_waiting
from tests.harness.queue import drain
from tests.harness.world import ClinicWorld, World

pytestmark = pytest.mark.usefixtures("fresh_process_keys")

CANARY = "radiograph-of-Bramble-4f1c"


async def stored(world: World, key: str) -> bytes:
    copy = staging_file(world.storage)
    try:
        await world.storage.get(key, copy)
        return copy.read_bytes()
    finally:
        copy.unlink(missing_ok=True)


async def row(superuser_engine, table: str, row_id: object) -> dict:
    async with superuser_engine.connect() as connection:
        found = await connection.execute(
            text(f"SELECT storage_key, sealed_with FROM {table} WHERE id = :id"),
            {"id": str(row_id)},
        )
        return dict(found.one()._mapping)


async def content(client: httpx.AsyncClient, clinic: ClinicWorld, attachment_id) -> httpx.Response:
    return await client.get(
        f"/api/v1/attachments/{attachment_id}/content", headers=clinic.owner.headers
    )


@pytest.fixture
async def clinic(world: World) -> ClinicWorld:
    return await world.clinic()


@pytest.fixture
async def record(world: World, clinic: ClinicWorld):
    return await world.record(clinic)


async def test_an_upload_is_stored_sealed_and_served_as_uploaded(
    client, world, clinic, record, superuser_engine
) -> None:
    uploaded = files.png_with_comment(CANARY)
    created = await client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        files={"file": ("x-ray.png", uploaded, "image/png")},
        headers=clinic.actors[Role.vet].headers,
    )
    assert created.status_code == 201, created.text

    found = await row(superuser_engine, "attachments", created.json()["id"])
    assert found["sealed_with"] == 1
    at_rest = await stored(world, found["storage_key"])
    assert CANARY.encode() not in at_rest
    assert not at_rest.startswith(files.PNG[:8])
    assert sealing.file_version(_written(world, at_rest)) == 1
    served = await content(client, clinic, created.json()["id"])
    assert (served.status_code, served.content) == (200, uploaded)


def _written(world: World, data: bytes):
    path = staging_file(world.storage)
    path.write_bytes(data)
    return path


async def test_a_file_moved_to_another_attachment_is_refused_as_a_problem(
    client, world, clinic, record
) -> None:
    ours = await world.attach(clinic, record.id, files.png_with_comment(CANARY))
    other = await world.attach(clinic, record.id)
    elsewhere = await world.clinic()
    theirs = await world.attach(elsewhere, (await world.record(elsewhere)).id)

    for target, holder in ((other, clinic), (theirs, elsewhere)):
        await world.storage.put(
            target.storage_key, _written(world, await stored(world, ours.storage_key))
        )
        refused = await content(client, holder, target.id)
        assert_problem(refused, 502, "attachment-corrupted")
        assert CANARY not in refused.text
    assert (await content(client, clinic, ours.id)).status_code == 200


async def test_a_file_gone_from_storage_is_a_problem_naming_it_missing(
    client, world, clinic, record, caplog
) -> None:
    attached = await world.attach(clinic, record.id)
    await world.storage.delete(attached.storage_key)

    refused = await content(client, clinic, attached.id)

    assert_problem(refused, 502, "attachment-corrupted")
    assert "missing" in refused.json()["detail"]
    assert f"attachment {attached.id}: no object" in caplog.text


async def test_a_file_stored_in_the_clear_before_and_changed_since_is_refused_by_its_checksum(
    client, world, clinic, record, caplog
) -> None:
    """Until rotation seals it, a file stored before files were sealed has only its checksum
    to say it is the one uploaded."""
    clear = await world.attach(clinic, record.id, clear=True)
    await world.storage.put(clear.storage_key, _written(world, files.POLYGLOT_PNG_HTML))

    refused = await content(client, clinic, clear.id)

    assert_problem(refused, 502, "attachment-corrupted")
    assert "checksum" in refused.json()["detail"]
    assert str(clear.id) in caplog.text


async def test_a_clinics_files_do_not_open_once_its_key_is_shredded(
    client, world, clinic, record, superuser_engine, monkeypatch
) -> None:
    attached = await world.attach(clinic, record.id)
    assert (await content(client, clinic, attached.id)).status_code == 200
    monkeypatch.setattr(keys, "OPENED_FOR_SECONDS", 0.0)

    async with superuser_engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM data_keys WHERE scope = :s"), {"s": str(clinic.id)}
        )

    assert_problem(await content(client, clinic, attached.id), 502, "attachment-corrupted")


async def test_rotation_seals_files_again_while_downloads_go_on_and_then_retires_the_old_key(
    client, world, clinic, record, database, settings: Settings, superuser_engine, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    monkeypatch.setattr(rotation, "settled_after", lambda: 0.0)
    sealed = [
        await world.attach(clinic, record.id, files.png_with_comment(f"{CANARY}-{n}"))
        for n in range(4)
    ]
    clear = await world.attach(clinic, record.id, files.png_with_comment(CANARY), clear=True)
    assert CANARY.encode() in await stored(world, clear.storage_key)
    export = await _ready_export(client, world, clinic, settings)
    elsewhere = await world.clinic()
    theirs = await world.attach(elsewhere, (await world.record(elsewhere)).id)
    every = [*sealed, clear]
    downloading, served = True, 0

    async def downloads() -> None:
        nonlocal served
        while downloading:
            for attachment in every:
                answer = await content(client, clinic, attachment.id)
                assert answer.status_code == 200, answer.text
                served += 1

    reader = asyncio.create_task(downloads())
    done = await rotation.rotate_dek(
        database.owner_url, keys.wrapper_from(settings), world.storage, str(clinic.id), retire=True
    )
    downloading = False
    await reader

    assert served > 0
    assert (done.version, done.files, done.left, done.retired) == (2, 6, 0, [1])
    for attachment in every:
        assert (await row(superuser_engine, "attachments", attachment.id))["sealed_with"] == 2
        at_rest = await stored(world, attachment.storage_key)
        assert CANARY.encode() not in at_rest
        assert sealing.file_version(_written(world, at_rest)) == 2
        assert (await content(client, clinic, attachment.id)).content == files.png_with_comment(
            CANARY if attachment is clear else f"{CANARY}-{sealed.index(attachment)}"
        )
    assert (await row(superuser_engine, "client_exports", export))["sealed_with"] == 2
    downloaded = await client.get(
        f"/api/v1/client-exports/{export}/content", headers=clinic.actors[Role.admin].headers
    )
    assert downloaded.status_code == 200, downloaded.text
    # Another clinic's files are on their own key, untouched.
    assert (await row(superuser_engine, "attachments", theirs.id))["sealed_with"] == 1
    assert (await content(client, elsewhere, theirs.id)).status_code == 200


class _Paused:
    """The rotation's storage, pausing after it has written a file's sealed bytes (its row
    still locked and saying "in the clear") until the test lets it go on."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.written = asyncio.Event()
        self.go_on = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.storage, name)

    async def put(self, key: str, staged: Path) -> None:
        await self.storage.put(key, staged)
        self.written.set()
        await self.go_on.wait()


async def test_a_download_while_its_clear_file_is_sealed_in_place_serves_the_file(
    client, world, clinic, record, database, settings: Settings, monkeypatch
) -> None:
    """The row read by a download says "in the clear" while the rotation has already written
    the sealed bytes and not yet committed: the download waits for the row, and serves the
    file (it served the sealed bytes as the file, a checksum mismatch, 502, before)."""
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    clear = await world.attach(clinic, record.id, files.png_with_comment(CANARY), clear=True)
    storage = _Paused(world.storage)
    rotating = asyncio.create_task(
        rotation.rotate_dek(
            database.owner_url, keys.wrapper_from(settings), storage, str(clinic.id)
        )
    )
    await asyncio.wait_for(storage.written.wait(), 30)
    downloading = asyncio.create_task(content(client, clinic, clear.id))
    await lock_requests_waiting(database, 1)  # the download, queued behind the rotation's row
    assert not downloading.done()
    storage.go_on.set()
    answer = await downloading
    assert answer.status_code == 200, answer.text
    assert answer.content == files.png_with_comment(CANARY)
    assert (await rotating).files == 1


async def test_a_file_missing_from_storage_is_left_and_keeps_its_key(
    world, clinic, record, database, settings: Settings, superuser_engine, monkeypatch
) -> None:
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    monkeypatch.setattr(rotation, "settled_after", lambda: 0.0)
    kept = await world.attach(clinic, record.id)
    lost = await world.attach(clinic, record.id)
    await world.storage.delete(lost.storage_key)

    done = await rotation.rotate_dek(
        database.owner_url, keys.wrapper_from(settings), world.storage, str(clinic.id), retire=True
    )

    assert (done.files, done.left, done.retired) == (1, 1, [])
    assert (await row(superuser_engine, "attachments", kept.id))["sealed_with"] == 2
    assert (await row(superuser_engine, "attachments", lost.id))["sealed_with"] == 1
    async with superuser_engine.connect() as connection:
        versions = await connection.scalars(
            text("SELECT version FROM data_keys WHERE scope = :s ORDER BY 1"), {"s": str(clinic.id)}
        )
        assert list(versions) == [1, 2]


@pytest.mark.parametrize(
    ("held_for", "waits", "left"),
    [(0.5, rotation.LOCKED_WAITS, 0), (2.0, 2, 1)],
    ids=["released-in-time", "held-too-long"],
)
async def test_a_file_a_download_holds_is_come_back_to_or_left_if_held_too_long(
    world,
    clinic,
    record,
    database,
    settings: Settings,
    superuser_engine,
    monkeypatch,
    held_for,
    waits,
    left,
) -> None:
    """A download holds its row (FOR SHARE) while it reads the file: the rotation passes over
    it, comes back once past the last, and waits a moment for it (a CI run under load left one
    such file behind, and the old key with it, when a pass did not come back)."""
    monkeypatch.setattr(keys, "CURRENT_FOR_SECONDS", 0.0)
    monkeypatch.setattr(rotation, "settled_after", lambda: 0.0)
    monkeypatch.setattr(rotation, "LOCKED_WAITS", waits)
    made = [await world.attach(clinic, record.id) for _ in range(2)]
    held = min(attachment.id for attachment in made)  # the first a pass comes to
    locked = asyncio.Event()

    async def download() -> None:
        async with superuser_engine.begin() as reader:
            await reader.execute(
                text("SELECT 1 FROM attachments WHERE id = :id FOR SHARE"), {"id": held}
            )
            locked.set()
            await asyncio.sleep(held_for)

    reading = asyncio.create_task(download())
    await locked.wait()
    done = await rotation.rotate_dek(
        database.owner_url, keys.wrapper_from(settings), world.storage, str(clinic.id), retire=True
    )
    await reading

    assert (done.files, done.left) == (2 - left, left)
    assert done.retired == ([] if left else [1])
    assert (await row(superuser_engine, "attachments", held))["sealed_with"] == (1 if left else 2)


async def test_a_table_naming_sealed_files_no_domain_declared_stops_the_run(
    world, clinic, database, settings: Settings, monkeypatch
) -> None:
    monkeypatch.setattr(
        rotation, "SEALED_FILES", [f for f in rotation.SEALED_FILES if f.table != "attachments"]
    )
    with pytest.raises(RuntimeError, match=r"attachments\.sealed_with"):
        await rotation.rotate_dek(
            database.owner_url, keys.wrapper_from(settings), world.storage, str(clinic.id)
        )


async def test_the_downgrade_is_refused_while_a_file_is_stored_sealed(
    world, clinic, record, database
) -> None:
    config = migrate.alembic_config(database.owner_url, APP_ROLE)
    await world.attach(clinic, record.id, clear=True)
    await asyncio.to_thread(command.downgrade, config, "0020")  # files in the clear only: fine
    await asyncio.to_thread(command.upgrade, config, "head")
    await world.attach(clinic, record.id)

    with pytest.raises(RuntimeError, match="1 attachments are stored sealed"):
        await asyncio.to_thread(command.downgrade, config, "0020")


async def _ready_export(client, world: World, clinic: ClinicWorld, settings: Settings) -> uuid.UUID:
    customer = await client.post(
        "/api/v1/customers",
        json={"first_name": "Ada", "last_name": "Sealed"},
        headers=clinic.owner.headers,
    )
    asked = await client.post(
        f"/api/v1/customers/{customer.json()['id']}/export",
        headers=clinic.actors[Role.admin].headers,
    )
    await drain(settings)
    return uuid.UUID(asked.json()["id"])
