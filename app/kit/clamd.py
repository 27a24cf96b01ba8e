"""A clamd client for one command, INSTREAM: stream a file to the daemon, read its verdict.

The wire format (clamd(8)): ``zINSTREAM\\0``, then chunks each prefixed with their length as a
4-byte big-endian integer, then a zero length; the reply is ``stream: OK\\0`` or
``stream: <signature> FOUND\\0`` (or ``... ERROR\\0``, e.g. past clamd's StreamMaxLength).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

from anyio import to_thread

CHUNK = 64 * 1024


class ScannerUnavailable(Exception):
    """clamd could not be reached, or answered something other than a verdict."""


@dataclass(frozen=True)
class Verdict:
    clean: bool
    signature: str | None = None


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def scan_file(address: str, path: Path, *, seconds: float) -> Verdict:
    host, port = parse_address(address)
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                await _send(writer, b"zINSTREAM\0")
                with path.open("rb") as source:
                    while chunk := await to_thread.run_sync(source.read, CHUNK):
                        await _send(writer, struct.pack(">I", len(chunk)) + chunk)
                await _send(writer, struct.pack(">I", 0))
                reply = await reader.readuntil(b"\0")
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ScannerUnavailable(f"clamd at {address}: {exc!r}") from exc
    return _verdict(reply.rstrip(b"\0").decode("utf-8", "replace"))


async def ping(address: str) -> None:
    """clamd's ``PING``, answered ``PONG``: the daemon is up and reading commands."""
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _send(writer, b"zPING\0")
        reply = await reader.readuntil(b"\0")
    finally:
        writer.close()
    if reply != b"PONG\0":
        raise ScannerUnavailable(f"clamd answered {reply[:200]!r} to PING")


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    # A daemon that reset the connection meanwhile (between chunks: the file is read in a
    # thread) has closed the transport, and uvloop's write then raises RuntimeError, not an
    # OSError: the upload was answered 500 (tests/chaos/test_dependencies.py, clamd down).
    if writer.is_closing():
        raise ConnectionResetError("clamd closed the connection")
    writer.write(data)
    await writer.drain()


def _verdict(reply: str) -> Verdict:
    answer = reply.removeprefix("stream:").strip()
    if answer == "OK":
        return Verdict(clean=True)
    if answer.endswith(" FOUND"):
        return Verdict(clean=False, signature=answer.removesuffix(" FOUND").strip()[:200])
    raise ScannerUnavailable(f"clamd answered {reply[:200]!r}")
