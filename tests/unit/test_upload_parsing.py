"""The streamed multipart parser (app/kit/uploads.py, ``receive_file``) on a request made here:
the one ``file`` field lands in the staging file with its size and SHA-256; a file over the
limit, declared or sent, is a 413 as soon as it is one; any other field, a second file, no
file, a body cut short or malformed, is a 422 naming what is wrong; not multipart, a 415.
Through the app and its routes: tests/security/test_uploads.py."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from app.kit.problems import InvalidInput, PayloadTooLarge, Problem
from app.kit.uploads import MULTIPART_HEADROOM, Received, UnsupportedMediaType, receive_file

BOUNDARY = b"b0und4ry"
LIMIT = 1000


def part(name: str | None, content: bytes, filename: str | None = "scan.png") -> bytes:
    disposition = b"form-data"
    if name is not None:
        disposition += b'; name="' + name.encode() + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename.encode() + b'"'
    return (
        b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n"
    )


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def request(
    chunks: Sequence[bytes],
    *,
    content_type: bytes = b"multipart/form-data; boundary=" + BOUNDARY,
    length: int | None = None,
    then: str = "end",
) -> tuple[Request, list[int]]:
    """A request whose body arrives in ``chunks``; ``then`` "disconnect" for a client that
    leaves before the end. The list counts the body's messages read."""
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": then != "end" or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if then == "disconnect":
        messages.append({"type": "http.disconnect"})
    read = [0]

    async def receive() -> Message:
        read[0] += 1
        return messages.pop(0)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    return Request(scope, receive), read


def in_pieces(body: bytes, size: int = 97) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


async def _refusal(tmp_path: Path, req: Request, limit: int = LIMIT) -> Problem:
    with pytest.raises(Problem) as raised:
        await receive_file(req, tmp_path / "staged", limit=limit)
    return raised.value


def _errors(problem: Problem) -> list[dict[str, Any]]:
    assert isinstance(problem, InvalidInput)
    assert problem.status == 422
    return [error.model_dump() for error in problem.errors]


async def test_the_file_lands_in_the_staging_file_with_its_size_and_digest(tmp_path: Path) -> None:
    content = bytes(range(256)) * 3 + b"\r\n--not the boundary\r\n"
    req, _ = request(in_pieces(form(part("file", content, "my scan.png"))))
    received = await receive_file(req, tmp_path / "staged", limit=LIMIT)
    assert received == Received(
        filename="my scan.png", size=len(content), sha256=hashlib.sha256(content).hexdigest()
    )
    assert (tmp_path / "staged").read_bytes() == content


async def test_a_file_of_the_limit_passes_and_one_byte_more_is_a_413(tmp_path: Path) -> None:
    at, _ = request(in_pieces(form(part("file", b"x" * LIMIT))))
    assert (await receive_file(at, tmp_path / "at", limit=LIMIT)).size == LIMIT
    over, _ = request(in_pieces(form(part("file", b"x" * (LIMIT + 1))), 10_000))
    problem = await _refusal(tmp_path, over)
    assert isinstance(problem, PayloadTooLarge)
    assert problem.detail == f"The file is larger than {LIMIT} bytes."


async def test_a_413_comes_at_the_first_chunk_over_not_at_the_end(tmp_path: Path) -> None:
    body = form(part("file", b"x" * (4 * LIMIT)))
    req, read = request(in_pieces(body, 300))
    problem = await _refusal(tmp_path, req)
    assert isinstance(problem, PayloadTooLarge)
    head = len(part("file", b"")) - 2  # the part's boundary and headers
    assert read[0] == (head + LIMIT) // 300 + 1  # the piece that takes the file past the limit
    assert (tmp_path / "staged").stat().st_size <= LIMIT


async def test_a_declared_length_past_the_file_and_its_framing_is_refused_unread(
    tmp_path: Path,
) -> None:
    req, read = request([b"x"], length=LIMIT + MULTIPART_HEADROOM + 1)
    problem = await _refusal(tmp_path, req)
    assert isinstance(problem, PayloadTooLarge)
    assert problem.detail == f"The file is larger than {LIMIT} bytes."
    assert read[0] == 0
    # The file and its framing, declared: read.
    body = form(part("file", b"x" * LIMIT))
    fits, _ = request([body], length=LIMIT + MULTIPART_HEADROOM)
    assert (await receive_file(fits, tmp_path / "fits", limit=LIMIT)).size == LIMIT


async def test_bytes_past_the_file_and_its_headroom_are_a_413_as_they_arrive(
    tmp_path: Path,
) -> None:
    """What the parser skips (here, after the closing boundary) still counts."""
    epilogue = b"e" * (MULTIPART_HEADROOM + LIMIT)
    req, read = request([form(part("file", b"x")), epilogue, b"never read"])
    problem = await _refusal(tmp_path, req)
    assert isinstance(problem, PayloadTooLarge)
    assert problem.detail == f"The file is larger than {LIMIT} bytes."
    assert read[0] == 2


@pytest.mark.parametrize(
    ("parts", "errors"),
    [
        (
            [part("owner", b"x", None), part("file", b"x")],
            [
                {
                    "loc": ["body", "owner"],
                    "msg": "not a field of this form",
                    "type": "extra_forbidden",
                }
            ],
        ),
        (
            [part(None, b"x", None)],
            [
                {
                    "loc": ["body", "(unnamed)"],
                    "msg": "not a field of this form",
                    "type": "extra_forbidden",
                }
            ],
        ),
        (
            [part("file", b"x"), part("file", b"y")],
            [{"loc": ["body", "file"], "msg": "send one file per request", "type": "too_many"}],
        ),
        ([], [{"loc": ["body", "file"], "msg": "Field required", "type": "missing"}]),
    ],
    ids=["extra-field", "unnamed", "two-files", "no-file"],
)
async def test_the_form_has_one_file_field_and_nothing_else(
    tmp_path: Path, parts: list[bytes], errors: list[dict[str, Any]]
) -> None:
    req, _ = request([form(*parts)])
    problem = await _refusal(tmp_path, req)
    assert problem.detail == "See errors for the fields at fault."
    assert _errors(problem) == errors


async def test_the_first_fault_is_the_one_answered(tmp_path: Path) -> None:
    req, _ = request([form(part("owner", b"x", None), part("file", b"x" * (LIMIT + 1)))])
    assert _errors(await _refusal(tmp_path, req))[0]["loc"] == ["body", "owner"]


async def test_nothing_of_a_second_file_is_written(tmp_path: Path) -> None:
    req, _ = request([form(part("file", b"first"), part("file", b"second"))])
    await _refusal(tmp_path, req)
    assert (tmp_path / "staged").read_bytes() == b"first"


@pytest.mark.parametrize(
    ("chunks", "then", "detail"),
    [
        (
            [b"--" + BOUNDARY + b"\r\n\x00\x01 not a header\r\n\r\n"],
            "end",
            "The multipart body is malformed.",
        ),
        ([part("file", b"x")], "disconnect", "The upload was cut short."),
        ([part("file", b"x")], "end", "The multipart body ends before its closing boundary."),
    ],
    ids=["malformed", "cut-short", "unclosed"],
)
async def test_a_body_that_is_not_a_whole_form_is_a_422_saying_why(
    tmp_path: Path, chunks: list[bytes], then: str, detail: str
) -> None:
    req, _ = request(chunks, then=then)
    problem = await _refusal(tmp_path, req)
    assert isinstance(problem, InvalidInput)
    assert problem.detail == detail


@pytest.mark.parametrize(
    ("content_type", "status", "detail"),
    [
        (b"application/json", 415, "Send the file as multipart/form-data, in the field 'file'."),
        (
            b"multipart/mixed; boundary=x",
            415,
            "Send the file as multipart/form-data, in the field 'file'.",
        ),
        (b"multipart/form-data", 422, "The multipart body has no boundary."),
    ],
)
async def test_only_multipart_form_data_with_a_boundary_is_read(
    tmp_path: Path, content_type: bytes, status: int, detail: str
) -> None:
    req, read = request([form(part("file", b"x"))], content_type=content_type)
    problem = await _refusal(tmp_path, req)
    assert (problem.status, problem.detail) == (status, detail)
    assert isinstance(problem, UnsupportedMediaType) == (status == 415)
    assert read[0] == 0
