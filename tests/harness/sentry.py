"""A local Sentry ingest: ``POST /api/<project>/envelope/`` over real HTTP, as Relay takes it.

It checks what Sentry checks before taking an envelope (the project in the path, the
``X-Sentry-Auth`` header's ``sentry_key`` against the DSN's public key) and decodes the
envelope format (https://develop.sentry.dev/sdk/foundations/transport/envelopes/): a header
line of JSON, then items, each a header line of JSON and a payload of ``length`` bytes (or up to
the next newline without one); the body gzip- or brotli-compressed as ``Content-Encoding`` says.
Each envelope is kept raw (decompressed) as well, so a test can search all of it for secrets.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.harness.threaded import serve_in_thread

PROJECT = "4242"
_PATH = re.compile(r"/api/(?P<project>\d+)/envelope/")
_AUTH_KEY = re.compile(r"sentry_key=(?P<key>[0-9a-f]+)")


class EnvelopeError(ValueError):
    """A body that is not an envelope (the fake answers 400, as Relay does)."""


@dataclass(frozen=True)
class Item:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class Envelope:
    headers: dict[str, Any]
    items: list[Item]
    raw: bytes


def parse(body: bytes) -> Envelope:
    """An envelope's header and items, as the format defines them."""
    header_line, newline, rest = body.partition(b"\n")
    try:
        headers = json.loads(header_line)
    except ValueError as exc:
        raise EnvelopeError("the envelope header is not JSON") from exc
    items: list[Item] = []
    while rest.strip():
        item_line, newline, rest = rest.partition(b"\n")
        if not newline:
            raise EnvelopeError("an item header without its payload")
        try:
            item_headers = json.loads(item_line)
        except ValueError as exc:
            raise EnvelopeError("an item header is not JSON") from exc
        length = item_headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            if len(rest) < length:
                raise EnvelopeError("an item is shorter than its length")
            payload, rest = rest[:length], rest[length:].removeprefix(b"\n")
        items.append(Item(item_headers, payload))
    return Envelope(headers, items, body)


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-untyped]  # the SDK chooses it when installed

        return bytes(brotli.decompress(body))
    if encoding in ("", "identity"):
        return body
    raise EnvelopeError(f"unknown Content-Encoding {encoding!r}")


@dataclass
class FakeSentry:
    public_key: str = field(default_factory=lambda: secrets.token_hex(16))
    host: str = "127.0.0.1"
    port: int = 0
    envelopes: list[Envelope] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """The status of every request refused (bad key, project, or body)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@{self.host}:{self.port}/{PROJECT}"

    def reset(self) -> None:
        with self._lock:
            self.envelopes.clear()
            self.refused.clear()

    def events(self) -> list[dict[str, Any]]:
        """The error events received (not transactions, sessions or client reports)."""
        with self._lock:
            return [item.json() for e in self.envelopes for item in e.items if item.type == "event"]

    def raw(self) -> bytes:
        """Every envelope received, decompressed, end to end."""
        with self._lock:
            return b"\n".join(envelope.raw for envelope in self.envelopes)

    def wait_for_events(self, count: int, seconds: float = 5.0) -> list[dict[str, Any]]:
        """The events, once there are ``count`` (or ``seconds`` have passed: then fewer)."""
        deadline = time.monotonic() + seconds
        while len(found := self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found

    def _take(self, status: int, envelope: Envelope | None) -> int:
        with self._lock:
            if envelope is None:
                self.refused.append(status)
            else:
                self.envelopes.append(envelope)
        return status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms wait an answer (tests/harness/threaded.py)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        fake = self.server.fake
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _PATH.fullmatch(self.path.partition("?")[0])
        key = _AUTH_KEY.search(self.headers.get("X-Sentry-Auth", ""))
        envelope = None
        if match is None or match["project"] != PROJECT:
            status = 404
        elif key is None or key["key"] != fake.public_key:
            status = 401
        else:
            try:
                envelope = parse(_decoded(body, self.headers.get("Content-Encoding", "")))
                status = 200
            except (EnvelopeError, OSError, EOFError):
                status = 400
        answer = json.dumps({"id": (envelope.headers.get("event_id") if envelope else None)})
        payload = answer.encode()
        self.send_response(fake._take(status, envelope))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSentry


@contextmanager
def fake_sentry() -> Iterator[FakeSentry]:
    fake = FakeSentry()
    server = _Server((fake.host, 0), _Handler)
    server.fake = fake
    fake.port = int(server.server_address[1])
    with serve_in_thread(server, "fake-sentry"):
        yield fake
