"""A multipart/form-data upload of one file, streamed to disk with a hard size limit.

FastAPI's ``UploadFile`` parses the whole body (spooling it to a temporary file of any size)
before the route runs; here the body is parsed as it arrives (python-multipart's streaming
parser), the file part goes straight into a staging file while its SHA-256 is computed, and the
request fails with 413 the moment the file passes the limit, so neither memory nor disk ever
holds more than the limit. The form has exactly one field, ``file``; any other field is refused
(422 naming it), so the form cannot carry fields the server owns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.kit.problems import FieldError, InvalidInput, PayloadTooLarge, Problem

FILE_FIELD = "file"
MULTIPART_HEADROOM = 64 * 1024
"""Bytes of multipart framing (boundaries, part headers) allowed beyond the file's limit."""


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


@dataclass
class Received:
    filename: str | None
    size: int
    sha256: str


@dataclass
class _State:
    sink: IO[bytes]
    limit: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    name: str | None = None
    filename: str | None = None
    seen_file: bool = False
    size: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    problem: Problem | None = None
    ended: bool = False

    def fail(self, problem: Problem) -> None:
        self.problem = self.problem or problem

    # -- python-multipart callbacks ----------------------------------------------------------
    def on_part_begin(self) -> None:
        self.headers, self.name, self.filename = {}, None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.name = name
        self.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if name != FILE_FIELD:
            self.fail(
                _form_error(name or "(unnamed)", "extra_forbidden", "not a field of this form")
            )
        elif self.seen_file:
            self.fail(_form_error(FILE_FIELD, "too_many", "send one file per request"))
        else:
            self.seen_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.problem is not None or self.name != FILE_FIELD:
            return
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.limit:
            self.fail(PayloadTooLarge(f"The file is larger than {self.limit} bytes."))
            return
        self.sha.update(chunk)
        self.sink.write(chunk)

    def on_end(self) -> None:
        self.ended = True


def _form_error(name: str, kind: str, message: str) -> InvalidInput:
    return InvalidInput(
        "See errors for the fields at fault.",
        [FieldError(loc=["body", name], msg=message, type=kind)],
    )


def _boundary(request: Request) -> bytes:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType("Send the file as multipart/form-data, in the field 'file'.")
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidInput("The multipart body has no boundary.")
    return boundary


async def receive_file(request: Request, into: Path, *, limit: int) -> Received:
    """Parse the body into ``into``; raise a problem (413, 415, 422) at the first fault."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_HEADROOM:
        raise PayloadTooLarge(f"The file is larger than {limit} bytes.")
    total = 0
    with into.open("wb") as sink:
        state = _State(sink=sink, limit=limit)
        callbacks = {
            name: getattr(state, name)
            for name in (
                "on_part_begin",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
                "on_part_data",
                "on_end",
            )
        }
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        try:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit + MULTIPART_HEADROOM:
                    state.fail(PayloadTooLarge(f"The file is larger than {limit} bytes."))
                if state.problem is None:
                    parser.write(chunk)
                if state.problem is not None:
                    raise state.problem
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidInput("The multipart body is malformed.") from exc
        except ClientDisconnect as exc:
            raise InvalidInput("The upload was cut short.") from exc
    if not state.ended:
        raise InvalidInput("The multipart body ends before its closing boundary.")
    if not state.seen_file:
        raise _form_error(FILE_FIELD, "missing", "Field required")
    return Received(filename=state.filename, size=state.size, sha256=state.sha.hexdigest())
