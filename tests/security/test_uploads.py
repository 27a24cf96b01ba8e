"""Attacks on file uploads: size, type, polyglots, names, other clinics, tampered storage.

Every attack leaves nothing behind: no row (counted as the superuser) and no file under the
storage root (listed from the file system), and answers problem+json.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.auth.models import Role
from app.kit.headers import DOWNLOAD_POLICY
from app.main import create_app
from app.settings import Settings
from fixtures import files
from tests.harness.api import PROBLEM_JSON

LIMIT = 4096


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"upload_max_bytes": LIMIT})


@pytest.fixture
async def small_client(small_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 4 KiB upload limit, configured (not bypassed)."""
    application: FastAPI = create_app(small_settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            yield http


async def _record(world, clinic):
    return await world.record(clinic)


@pytest.fixture
async def clinic(world):
    return await world.clinic((Role.vet,))


@pytest.fixture
async def record(world, clinic):
    return await _record(world, clinic)


def _upload(client, clinic, record, content, name="scan.png", content_type="image/png"):
    return client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        files={"file": (name, content, content_type)},
        headers=clinic.owner.headers,
    )


def _stored_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def _rows(superuser_engine) -> int:
    async with superuser_engine.connect() as connection:
        return int(await connection.scalar(text("SELECT count(*) FROM attachments")) or 0)


async def _nothing_stored(superuser_engine, settings: Settings) -> bool:
    return await _rows(superuser_engine) == 0 and _stored_files(settings.attachments_root) == []


# -- size -----------------------------------------------------------------------------------------
async def test_a_file_over_the_limit_is_413_and_nothing_is_stored(
    small_client, small_settings, superuser_engine, clinic, record
):
    at_limit = files.PNG + b"\0" * (LIMIT - len(files.PNG))
    over = at_limit + b"\0"

    refused = await _upload(small_client, clinic, record, over)

    assert refused.status_code == 413, refused.text
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert await _nothing_stored(superuser_engine, small_settings)
    accepted = await _upload(small_client, clinic, record, at_limit)
    assert accepted.status_code == 201, "exactly the limit is allowed"


async def test_an_endless_body_is_cut_off_at_the_limit_not_read_to_the_end(
    small_client, small_settings, superuser_engine, clinic, record
):
    """No Content-Length (chunked), so only counting while streaming can stop it."""
    boundary = "b0undary"
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        ).encode() + files.PNG
        for _ in range(1000):  # 64 MiB, if it were all read
            sent += 1
            yield b"\0" * 65536

    response = await small_client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=body(),
        headers={
            **clinic.owner.headers,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )

    assert response.status_code == 413
    assert sent < 5, f"the server read {sent} chunks of 64 KiB past a 4 KiB limit"
    assert await _nothing_stored(superuser_engine, small_settings)


async def test_an_endless_epilogue_after_the_form_is_cut_off_too(
    small_client, small_settings, superuser_engine, clinic, record
):
    """Bytes after the closing boundary belong to no part: the body's total is bounded too."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield _raw_multipart("a.png", files.PNG)
        for _ in range(1000):
            sent += 1
            yield b"\0" * 65536

    response = await small_client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=body(),
        headers={**clinic.owner.headers, "Content-Type": "multipart/form-data; boundary=B"},
    )

    assert response.status_code == 413
    assert sent < 5
    assert await _nothing_stored(superuser_engine, small_settings)


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    small_client, small_settings, superuser_engine, clinic, record
):
    response = await small_client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=b"--x\r\n",
        headers={
            **clinic.owner.headers,
            "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": str(10 * 1024 * 1024),
        },
    )

    assert response.status_code == 413
    assert await _nothing_stored(superuser_engine, small_settings)


# -- type -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        pytest.param(files.HTML, "scan.png", "image/png", id="html named and declared png"),
        pytest.param(files.SVG, "scan.svg", "image/svg+xml", id="svg with a script"),
        pytest.param(files.ELF, "scan.jpg", "image/jpeg", id="ELF executable"),
        pytest.param(files.EXE, "scan.pdf", "application/pdf", id="Windows executable"),
        pytest.param(files.zip_of("a.png", files.PNG), "scan.png", "image/png", id="zip"),
        pytest.param(files.zip_bomb(), "scan.png", "image/png", id="zip bomb"),
        pytest.param(files.HTML + files.PNG, "scan.png", "image/png", id="html, then a png"),
        pytest.param(b" " + files.PDF, "scan.pdf", "application/pdf", id="pdf not at the start"),
        pytest.param(b"", "scan.png", "image/png", id="empty"),
    ],
)
async def test_anything_but_an_allowed_type_is_415_and_nothing_is_stored(
    client, settings, superuser_engine, clinic, record, content, name, content_type
):
    response = await _upload(client, clinic, record, content, name, content_type)

    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith("/unsupported-media-type")
    assert await _nothing_stored(superuser_engine, settings)


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        pytest.param(files.POLYGLOT_PNG_HTML, "image/png", id="png + html"),
        pytest.param(files.GIFAR, "image/gif", id="gifar"),
        pytest.param(files.PDF_ZIP, "application/pdf", id="pdf + zip"),
    ],
)
async def test_a_polyglot_is_stored_as_what_it_starts_as_and_never_rendered(
    client, clinic, record, content, media_type
):
    """Trailing data is kept (see ADR 0010): the download can never be a page of our origin."""
    created = await _upload(client, clinic, record, content, "page.html", "text/html")

    assert created.status_code == 201, created.text
    assert created.json()["content_type"] == media_type
    download = await client.get(
        f"/api/v1/attachments/{created.json()['id']}/content", headers=clinic.owner.headers
    )
    assert download.headers["content-type"] == media_type
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-security-policy"] == DOWNLOAD_POLICY
    assert download.content == content


# -- names ----------------------------------------------------------------------------------------
NAMES = {
    # pragma: allowlist nextline secret - a path-traversal file name, not a password
    "../../../../etc/passwd": "passwd.png",
    "..\\..\\windows\\system32\\evil.png": "evil.png",
    "/var/lib/vetify/.bashrc": "bashrc.png",
    "..": "attachment.png",
    "scan\x00.php.png": "scan.php.png",
    "bell\x07escape\x1b[31mred\ttab.png": "bellescape[31mredtab.png",
    "x-ray\r\nSet-Cookie: session=stolen.png": "x-ray.png",
    "report\u202egnp.exe": "reportgnp.exe.png",
    "Cafe\u0301 radiograph.PNG": "Caf\u00e9 radiograph.PNG",
    "line\u2028separator.png": "lineseparator.png",
    "a" * 400 + ".png": "a" * 146 + ".png",
}


def _raw_multipart(filename: str, content: bytes) -> bytes:
    """The name as raw bytes in the part's header: a browser would escape what an attacker
    does not (NUL, CR LF, control characters)."""
    return (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: image/png\r\n\r\n'
        + content
        + b"\r\n--B--\r\n"
    )


@pytest.mark.parametrize(("sent", "stored"), NAMES.items(), ids=[repr(n)[:40] for n in NAMES])
async def test_file_names_are_stored_sanitised_and_never_become_paths(
    client, settings, clinic, record, sent, stored
):
    response = await client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=_raw_multipart(sent, files.PNG),
        headers={**clinic.owner.headers, "Content-Type": "multipart/form-data; boundary=B"},
    )

    assert response.status_code == 201, response.text
    attachment = response.json()
    assert attachment["filename"] == stored
    # The only file written is under the root, at the clinic's id and a random UUID.
    [written] = _stored_files(settings.attachments_root)
    assert re.fullmatch(rf"{clinic.id}/[0-9a-f-]{{36}}", written)
    download = await client.get(
        f"/api/v1/attachments/{attachment['id']}/content", headers=clinic.owner.headers
    )
    disposition = download.headers["content-disposition"]
    assert disposition.isascii()
    assert disposition.isprintable()
    assert "set-cookie" not in download.headers
    assert re.fullmatch(
        r'attachment; filename="[^"\\]+"; filename\*=UTF-8\'\'[A-Za-z0-9%._~-]+', disposition
    )


# -- other clinics --------------------------------------------------------------------------------
async def test_uploading_to_another_clinics_record_is_404_and_stores_nothing(
    world, client, settings, superuser_engine, clinic
):
    theirs = await world.clinic((Role.vet,))
    their_record = await _record(world, theirs)

    response = await _upload(client, clinic, their_record, files.PNG)

    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    assert await _nothing_stored(superuser_engine, settings)


async def test_another_clinics_attachment_is_404_on_every_route(world, client, clinic):
    theirs = await world.clinic((Role.vet,))
    attachment = await world.attach(theirs, (await _record(world, theirs)).id)
    url = f"/api/v1/attachments/{attachment.id}"
    headers = clinic.owner.headers

    responses = [
        await client.get(url, headers=headers),
        await client.get(f"{url}/content", headers=headers),
        await client.delete(url, headers=headers),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404]
    own = await client.get(f"{url}/content", headers=theirs.owner.headers)
    assert own.content == files.PNG, "their file is still there for them"


# -- downloads ------------------------------------------------------------------------------------
async def test_a_download_is_an_attachment_of_the_sniffed_type_with_its_checksum(
    client, clinic, record
):
    created = (
        await _upload(client, clinic, record, files.PDF, "Résultats.pdf", "text/html")
    ).json()

    response = await client.get(
        f"/api/v1/attachments/{created['id']}/content", headers=clinic.owner.headers
    )

    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Resultats.pdf\"; filename*=UTF-8''R%C3%A9sultats.pdf"
    )
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == DOWNLOAD_POLICY
    assert response.headers["cache-control"] == "no-store"
    digest = hashlib.sha256(files.PDF).digest()
    import base64

    assert response.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest).decode()}:"
    assert created["sha256"] == hashlib.sha256(response.content).hexdigest()


@pytest.mark.parametrize("tamper", ["changed", "truncated", "deleted"])
async def test_stored_bytes_that_no_longer_match_their_checksum_are_not_served(
    client, settings, clinic, record, tamper, caplog
):
    created = (await _upload(client, clinic, record, files.PNG)).json()
    [key] = _stored_files(settings.attachments_root)
    stored = settings.attachments_root / key
    if tamper == "changed":
        stored.write_bytes(files.POLYGLOT_PNG_HTML)
    elif tamper == "truncated":
        stored.write_bytes(files.PNG[:20])
    else:
        stored.unlink()

    response = await client.get(
        f"/api/v1/attachments/{created['id']}/content", headers=clinic.owner.headers
    )

    assert response.status_code == 502
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"].endswith("/attachment-corrupted")
    assert b"<script" not in response.content
    assert created["id"] in caplog.text, "the mismatch is logged with the attachment's id"


async def test_a_huge_part_header_is_refused_and_stores_nothing(
    client, settings, superuser_engine, clinic, record
):
    """Part headers are held in memory while parsed: each is bounded, not only the body (by
    python-multipart itself: "Maximum header size exceeded", a malformed body here)."""
    name = "a" * (64 * 1024) + ".png"
    response = await client.post(
        f"/api/v1/medical-records/{record.id}/attachments",
        content=_raw_multipart(name, files.PNG),
        headers={**clinic.owner.headers, "Content-Type": "multipart/form-data; boundary=B"},
    )

    assert response.status_code == 422, response.text
    assert await _nothing_stored(superuser_engine, settings)
