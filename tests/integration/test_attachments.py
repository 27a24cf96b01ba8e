"""Files on medical records: upload, list, read, download, delete; the record lock; scanning."""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
import uuid
from collections.abc import Iterator

import httpx
import hypothesis
import pytest
from fastapi import FastAPI
from hypothesis import strategies as st
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from app.attachments.models import Attachment
from app.auth.models import Role
from app.kit.clock import utcnow
from app.main import create_app
from app.records.models import MedicalRecord
from app.settings import Settings
from fixtures import files
from tests.harness.api import PROBLEM_JSON, assert_problem
from tests.harness.clamd import SIGNATURE
from tests.harness.plugin import s3_settings
from tests.harness.queue import drain, due_now


@pytest.fixture
async def clinic(world):
    return await world.clinic()


@pytest.fixture
async def record(world, clinic):
    return await world.record(clinic)


def upload(client, clinic, record, content=files.PNG, name="x-ray.png", role=Role.vet, **kw):
    return client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        files={"file": (name, content, kw.pop("content_type", "application/octet-stream"))},
        headers=clinic.actors[role].headers,
        **kw,
    )


async def _lock(world, clinic, record) -> None:
    async with world.session(clinic.id) as session:
        await session.execute(
            update(MedicalRecord)
            .where(MedicalRecord.id == record.id)
            .values(signed_at=utcnow(), locks_at=utcnow())
        )


async def test_a_vet_attaches_a_radiograph_and_anyone_in_the_clinic_downloads_it(
    client, clinic, record
):
    response = await upload(client, clinic, record)

    assert response.status_code == 201, response.text
    attachment = response.json()
    assert attachment["record_id"] == str(record.id)
    assert attachment["filename"] == "x-ray.png"
    assert attachment["content_type"] == "image/png"
    assert attachment["size_bytes"] == len(files.PNG)
    assert attachment["sha256"] == hashlib.sha256(files.PNG).hexdigest()
    assert attachment["scan_status"] == "unscanned"
    assert attachment["uploaded_by"] == str(clinic.actors[Role.vet].user.id)
    assert "storage_key" not in attachment
    reader = clinic.actors[Role.read_only].headers
    listed = await client.get(f"/api/v1/medical-records/{record.id}/attachments", headers=reader)
    assert [a["id"] for a in listed.json()["items"]] == [attachment["id"]]
    one = await client.get(f"/api/v1/attachments/{attachment['id']}", headers=reader)
    assert one.json() == attachment
    content = await client.get(f"/api/v1/attachments/{attachment['id']}/content", headers=reader)
    assert content.status_code == 200
    assert content.content == files.PNG
    assert content.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (files.PNG, "image/png"),
        (files.JPEG, "image/jpeg"),
        (files.GIF, "image/gif"),
        (files.WEBP, "image/webp"),
        (files.PDF, "application/pdf"),
        (files.DICOM, "application/dicom"),
    ],
)
async def test_the_type_is_read_from_the_bytes_not_from_the_name_or_declared_type(
    client, clinic, record, content, media_type
):
    response = await upload(
        client, clinic, record, content, name="notes.txt", content_type="text/html"
    )

    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == media_type
    assert response.json()["filename"].startswith("notes.txt.")


async def test_bytes_of_no_kind_served_are_refused_as_415_and_store_nothing(
    client, clinic, record, superuser_engine, settings
):
    """A script named x-ray.png and declared image/png is still a script."""
    response = await upload(
        client, clinic, record, b"#!/bin/sh\necho hi\n", content_type="image/png"
    )

    assert_problem(response, 415, "unsupported-media-type")
    assert "PNG" in response.json()["detail"]
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM attachments")) == 0
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("role", [Role.receptionist, Role.read_only, Role.admin])
async def test_only_clinical_roles_attach_files(client, clinic, record, superuser_engine, role):
    response = await upload(client, clinic, record, role=role)

    assert response.status_code == 403
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM attachments")) == 0


async def test_the_form_takes_one_file_and_nothing_else(client, clinic, record, superuser_engine):
    url = f"/api/v1/medical-records/{record.id}/attachments"
    headers = clinic.owner.headers
    extra = await client.post(
        url,
        files={"file": ("a.png", files.PNG), "record_id": (None, str(uuid.uuid4()))},
        headers=headers,
    )
    two = await client.post(
        url, files=[("file", ("a.png", files.PNG)), ("file", ("b.png", files.PNG))], headers=headers
    )
    none = await client.post(url, files={"note": (None, "hello")}, headers=headers)
    empty = await client.post(url, files={}, data={}, headers=headers)
    as_json = await client.post(url, json={"file": "iVBORw0KGgo="}, headers=headers)
    no_boundary = await client.post(
        url, content=b"x", headers={**headers, "Content-Type": "multipart/form-data"}
    )
    no_parts = await client.post(
        url,
        content=b"--B--\r\n",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=B"},
    )
    field_first = await client.post(
        url,
        content=b'--B\r\nContent-Disposition: form-data; name="tenant_id"\r\n\r\n'
        + str(uuid.uuid4()).encode()
        + b'\r\n--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        + files.PNG
        + b"\r\n--B--\r\n",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=B"},
    )

    assert extra.status_code == 422
    assert extra.json()["errors"][0]["loc"] == ["body", "record_id"]
    assert two.status_code == 422
    assert none.status_code == 422
    assert empty.status_code in {415, 422}
    assert as_json.status_code == 415
    assert as_json.headers["content-type"] == PROBLEM_JSON
    assert no_boundary.status_code == 422
    assert no_parts.status_code == 422
    assert no_parts.json()["errors"][0]["loc"] == ["body", "file"]
    assert field_first.status_code == 422
    assert field_first.json()["errors"][0]["loc"] == ["body", "tenant_id"]
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM attachments")) == 0


async def test_a_truncated_body_is_refused_and_stores_nothing(
    client, clinic, record, superuser_engine, settings
):
    boundary = "vetify-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + files.PNG  # no closing boundary
    response = await client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=body,
        headers={
            **clinic.owner.headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )

    assert response.status_code == 422
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM attachments")) == 0
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []


async def test_a_client_that_disconnects_mid_upload_leaves_nothing(
    app, clinic, record, superuser_engine, settings
):
    """Driven over raw ASGI: the body's first chunk, then the client is gone."""
    messages = [
        {
            "type": "http.request",
            "body": b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"'
            b"\r\n\r\n" + files.PNG,
            "more_body": True,
        },
        {"type": "http.disconnect"},
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    token = clinic.owner.headers["Authorization"].encode()
    await app(
        {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": f"/api/v1/medical-records/{record.id}/attachments",
            "raw_path": f"/api/v1/medical-records/{record.id}/attachments".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", token),
                (b"content-type", b"multipart/form-data; boundary=B"),
            ],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 443),
        },
        receive,
        send,
    )

    assert sent[0]["status"] == 422
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM attachments")) == 0
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []


# -- the record lock ------------------------------------------------------------------------------
async def test_a_file_can_be_removed_until_the_record_locks(client, world, clinic, record):
    removable = (await upload(client, clinic, record)).json()
    kept = (await upload(client, clinic, record)).json()
    headers = clinic.actors[Role.technician].headers

    removed = await client.delete(f"/api/v1/attachments/{removable['id']}", headers=headers)
    await _lock(world, clinic, record)
    refused = await client.delete(f"/api/v1/attachments/{kept['id']}", headers=headers)

    assert removed.status_code == 204
    gone = await client.get(f"/api/v1/attachments/{removable['id']}/content", headers=headers)
    assert gone.status_code == 404
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/record-locked")
    still = await client.get(f"/api/v1/attachments/{kept['id']}/content", headers=headers)
    assert still.content == files.PNG


async def test_removing_a_file_deletes_its_bytes(client, clinic, record, settings):
    attachment = (await upload(client, clinic, record)).json()
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()]

    await client.delete(f"/api/v1/attachments/{attachment['id']}", headers=clinic.owner.headers)

    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []


async def test_files_may_be_added_to_a_locked_record(client, world, clinic, record):
    await _lock(world, clinic, record)

    response = await upload(client, clinic, record, files.PDF, name="lab-results.pdf")

    assert response.status_code == 201, response.text


async def test_the_database_refuses_to_delete_a_locked_records_file(world, clinic, record):
    attachment = await world.attach(clinic, record.id)
    await _lock(world, clinic, record)

    with pytest.raises(DBAPIError, match="locked"):
        async with world.session(clinic.id) as session:
            await session.execute(
                text("DELETE FROM attachments WHERE id = :id"), {"id": attachment.id}
            )


async def test_what_was_uploaded_cannot_be_rewritten_in_the_database(world, clinic, record):
    attachment = await world.attach(clinic, record.id)

    with pytest.raises(DBAPIError, match="permission denied"):
        async with world.session(clinic.id) as session:
            await session.execute(
                update(Attachment).where(Attachment.id == attachment.id).values(sha256="0" * 64)
            )


# -- malware scanning -----------------------------------------------------------------------------
@pytest.fixture
async def scanning(settings, clamd):
    application = create_app(settings.model_copy(update={"clamd_address": clamd.address}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def scanned_client(scanning: FastAPI):
    transport = httpx.ASGITransport(app=scanning)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


async def test_a_clean_file_is_scanned_then_served(scanned_client, clinic, record, clamd):
    response = await upload(scanned_client, clinic, record)

    assert response.json()["scan_status"] == "clean"
    assert clamd.scanned == [files.PNG]
    content = await scanned_client.get(
        f"/api/v1/attachments/{response.json()['id']}/content", headers=clinic.owner.headers
    )
    assert content.content == files.PNG


async def test_an_infected_file_is_recorded_never_stored_nor_served(
    scanned_client, clinic, record, clamd, settings
):
    # EICAR behind a PDF header: what a real infected document looks like to the sniffer.
    response = await upload(scanned_client, clinic, record, files.PDF + files.EICAR, name="a.pdf")

    assert response.status_code == 201
    assert response.json()["scan_status"] == "infected"
    assert response.json()["scan_signature"] == SIGNATURE
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []
    content = await scanned_client.get(
        f"/api/v1/attachments/{response.json()['id']}/content", headers=clinic.owner.headers
    )
    assert content.status_code == 409
    assert content.json()["type"].endswith("/attachment-infected")


async def test_while_the_scanner_is_down_a_file_stays_pending_and_is_not_served(
    settings, clinic, record
):
    down = settings.model_copy(update={"clamd_address": "127.0.0.1:9"})
    application = create_app(down)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
            response = await upload(http, clinic, record)
            content = await http.get(
                f"/api/v1/attachments/{response.json()['id']}/content",
                headers=clinic.owner.headers,
            )

    assert response.json()["scan_status"] == "pending"
    assert content.status_code == 409
    assert content.json()["type"].endswith("/attachment-not-scanned")


@pytest.fixture
def resetting_clamd() -> Iterator[str]:
    """A scanner that reads each INSTREAM command and resets the connection (a daemon
    restarting while a file streams to it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(5)
            connection.recv(len(b"zINSTREAM\0"))
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()  # linger 0: a reset, not a polite close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


async def test_a_scanner_resetting_the_connection_mid_upload_leaves_the_file_pending(
    settings, clinic, record, resetting_clamd
):
    """Several INSTREAM chunks, the connection reset under them: stored pending for the job,
    never a 500 (tests/chaos/test_dependencies.py found one, from uvloop's write)."""
    big = files.png_with_comment("x" * 400_000)
    application = create_app(settings.model_copy(update={"clamd_address": resetting_clamd}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
            response = await upload(http, clinic, record, big, name="big.png")

    assert response.status_code == 201, response.text
    assert response.json()["scan_status"] == "pending"


async def _upload_while_the_scanner_is_down(settings, clinic, record, content, name) -> dict:
    application = create_app(settings.model_copy(update={"clamd_address": "127.0.0.1:9"}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
            created = (await upload(http, clinic, record, content, name=name)).json()
    assert created["scan_status"] == "pending"
    return created


async def test_a_pending_file_is_scanned_by_the_job_once_the_scanner_is_back(
    settings, clinic, record, clamd, scanned_client
):
    created = await _upload_while_the_scanner_is_down(settings, clinic, record, files.PNG, "a.png")
    # Still down when the job first runs: it stays pending and the job is retried later.
    await drain(settings.model_copy(update={"clamd_address": "127.0.0.1:9"}))
    assert clamd.scanned == []

    await due_now(settings)
    await drain(settings.model_copy(update={"clamd_address": clamd.address}))

    assert clamd.scanned == [files.PNG]
    url = f"/api/v1/attachments/{created['id']}"
    assert (await scanned_client.get(url, headers=clinic.owner.headers)).json()[
        "scan_status"
    ] == "clean"
    served = await scanned_client.get(f"{url}/content", headers=clinic.owner.headers)
    assert served.content == files.PNG


async def test_a_pending_file_the_job_finds_infected_is_deleted_from_storage(
    settings, clinic, record, clamd, scanned_client
):
    created = await _upload_while_the_scanner_is_down(
        settings, clinic, record, files.PDF + files.EICAR, "a.pdf"
    )
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] != []

    await drain(settings.model_copy(update={"clamd_address": clamd.address}))

    found = await scanned_client.get(
        f"/api/v1/attachments/{created['id']}", headers=clinic.owner.headers
    )
    assert (found.json()["scan_status"], found.json()["scan_signature"]) == ("infected", SIGNATURE)
    assert [p for p in settings.attachments_root.rglob("*") if p.is_file()] == []


# -- S3 -------------------------------------------------------------------------------------------
async def test_attachments_round_trip_through_s3(settings: Settings, s3, clinic, record):
    bucket = f"files-{uuid.uuid4().hex[:12]}"
    application = create_app(s3_settings(settings, s3, bucket))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as http:
            created = (await upload(http, clinic, record, files.DICOM, name="ct.dcm")).json()
            content = await http.get(
                f"/api/v1/attachments/{created['id']}/content", headers=clinic.owner.headers
            )

    assert content.content == files.DICOM
    keys = [item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1
    assert keys[0].startswith(f"{clinic.id}/")


_RANGE_PIECES = st.sampled_from(
    ["bytes", "items", "=", "-", ",", " ", "0", "1", "5", "99999999", "-1", "abc", "\t"]
)


@hypothesis.settings(
    max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
@hypothesis.given(st.lists(_RANGE_PIECES, min_size=0, max_size=8).map("".join))
async def test_every_range_a_client_asks_for_is_served_or_refused_as_a_problem(
    client, clinic, record, stored_png, asked
):
    """Ranges are served (206), ignored (200), or refused as problem+json: 400 for a malformed
    one, 416 beyond the file, with ``Content-Range`` saying its size (issue 15, defect 3)."""
    reader = clinic.actors[Role.read_only].headers
    response = await client.get(
        f"/api/v1/attachments/{stored_png}/content", headers={**reader, "Range": asked}
    )
    if response.status_code == 200:
        assert response.content == files.PNG
        return
    if response.status_code == 206:
        return  # the part(s) asked for; Starlette's own
    assert response.headers["content-type"] == PROBLEM_JSON, (asked, response.text)
    assert response.status_code in (400, 416), (asked, response.status_code)
    if response.status_code == 416:
        assert response.headers["content-range"] == f"bytes */{len(files.PNG)}"


@pytest.fixture
async def stored_png(client, clinic, record) -> str:
    response = await upload(client, clinic, record)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
