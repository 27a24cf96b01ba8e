"""Downloads answer range errors as problem+json, and otherwise as Starlette would: a whole
file when no range applies, the part asked for when one does."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.background import BackgroundTask

from app.kit import problems
from app.kit.downloads import Download
from tests.harness.api import assert_problem

CONTENT = bytes(range(256)) * 4


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    stored = tmp_path / "scan.bin"
    stored.write_bytes(CONTENT)
    app = FastAPI()
    problems.install(app)

    @app.api_route("/file", methods=["GET", "HEAD"])
    async def file() -> Download:
        return Download(stored, stat_result=os.stat(stored))

    @app.get("/copy")
    async def copy() -> Download:
        # A download copy (from S3), removed once answered, whatever the answer.
        copied = tmp_path / "copy.bin"
        copied.write_bytes(CONTENT)
        return Download(
            copied, stat_result=os.stat(copied), background=BackgroundTask(copied.unlink)
        )

    @app.post("/file")
    async def posted() -> Download:
        return Download(stored, stat_result=os.stat(stored))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_a_range_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/file", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == CONTENT[10:20]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_malformed_range_is_a_400_problem(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/file", headers={"Range": "items=1-2"})
    if method == "GET":
        assert_problem(response, 400, "range-not-valid")
    else:
        assert response.status_code == 400
        assert response.headers["content-type"] == problems.MEDIA_TYPE


async def test_a_range_beyond_the_file_is_a_416_problem_with_its_size(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/file", headers={"Range": f"bytes={len(CONTENT)}-"})
    assert_problem(response, 416, "range-not-satisfiable")
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


async def test_a_stale_if_range_serves_the_whole_file_whatever_the_range(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/file", headers={"Range": "items=1-2", "If-Range": '"stale"'})
    assert response.status_code == 200
    assert response.content == CONTENT


async def test_the_refusals_say_what_was_wrong(client: httpx.AsyncClient) -> None:
    malformed = (await client.get("/file", headers={"Range": "items=1-2"})).json()
    # Starlette's reason, then how to ask.
    assert malformed["detail"].endswith("range (send e.g. Range: bytes=0-1023).")
    beyond = (await client.get("/file", headers={"Range": "bytes=5000-"})).json()
    assert beyond["detail"] == f"The range starts beyond the file ({len(CONTENT)} bytes)."


@pytest.mark.parametrize("range_", ["items=1-2", "bytes=5000-", "bytes=0-9"])
async def test_a_download_copy_is_removed_whatever_the_answer(
    client: httpx.AsyncClient, tmp_path: Path, range_: str
) -> None:
    response = await client.get("/copy", headers={"Range": range_})
    assert response.status_code in (206, 400, 416)
    assert not (tmp_path / "copy.bin").exists()


async def test_a_current_if_range_lets_the_range_be_judged(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/file")).headers["etag"]
    response = await client.get("/file", headers={"Range": "items=1-2", "If-Range": etag})
    assert_problem(response, 400, "range-not-valid")


async def test_a_range_on_another_method_is_not_judged(client: httpx.AsyncClient) -> None:
    response = await client.post("/file", headers={"Range": "items=1-2"})
    assert response.status_code == 200
    assert response.content == CONTENT
