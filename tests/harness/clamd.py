"""A small clamd for tests: speaks INSTREAM over TCP as clamd(8) does, flags the EICAR string.

Real enough to catch a client that frames chunks wrongly (each chunk's 4-byte big-endian length,
a zero length to end), since it parses exactly that and answers as clamd does.
"""

from __future__ import annotations

import socketserver
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fixtures.files import EICAR
from tests.harness.threaded import serve_in_thread

SIGNATURE = "Win.Test.EICAR_HDB-1"


@dataclass
class FakeClamd:
    host: str = "127.0.0.1"
    port: int = 0
    scanned: list[bytes] = field(default_factory=list)
    """Every stream received, in order."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _read_exactly(stream: socketserver.StreamRequestHandler, size: int) -> bytes:
    data = stream.rfile.read(size)
    if len(data) != size:
        raise ConnectionError("stream cut short")
    return data


@contextmanager
def fake_clamd() -> Iterator[FakeClamd]:
    clamd = FakeClamd()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            command = b""
            while not command.endswith(b"\0"):
                command += _read_exactly(self, 1)
            if command == b"zPING\0":
                self.wfile.write(b"PONG\0")
                return
            if command != b"zINSTREAM\0":
                self.wfile.write(b"UNKNOWN COMMAND\0")
                return
            received = bytearray()
            while length := struct.unpack(">I", _read_exactly(self, 4))[0]:
                received += _read_exactly(self, length)
            clamd.scanned.append(bytes(received))
            verdict = f"{SIGNATURE} FOUND" if EICAR in received else "OK"
            self.wfile.write(f"stream: {verdict}\0".encode())

    server = socketserver.ThreadingTCPServer((clamd.host, 0), Handler)
    server.daemon_threads = True
    clamd.port = server.server_address[1]
    with serve_in_thread(server, "fake-clamd"):
        yield clamd
