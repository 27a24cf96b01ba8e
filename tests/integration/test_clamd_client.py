"""The clamd client (app/kit/clamd.py, ``scan_file``) against the tests' small clamd, which parses
INSTREAM exactly (tests/harness/clamd.py): a file of several chunks arrives whole, EICAR is
found, a daemon that is not there or answers late is "unavailable", and a reply that is not
UTF-8 is read, not a crash. Through the upload route: tests/integration/test_attachments.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.kit.clamd import CHUNK, ScannerUnavailable, Verdict, parse_address, ping, scan_file
from fixtures.files import EICAR
from tests.harness.clamd import SIGNATURE, FakeClamd, fake_clamd


@pytest.fixture
def clamd() -> Iterator[FakeClamd]:
    with fake_clamd() as daemon:
        yield daemon


@pytest.mark.parametrize("size", [0, 1, CHUNK, 2 * CHUNK + 17])
async def test_a_file_arrives_whole_and_clean_is_ok(
    clamd: FakeClamd, tmp_path: Path, size: int
) -> None:
    content = bytes(i % 251 for i in range(size))
    path = tmp_path / "scan.bin"
    path.write_bytes(content)
    assert await scan_file(clamd.address, path, seconds=5) == Verdict(clean=True)
    assert clamd.scanned == [content]


async def test_eicar_is_found_and_named(clamd: FakeClamd, tmp_path: Path) -> None:
    path = tmp_path / "eicar.com"
    path.write_bytes(b"padding " * 10_000 + EICAR)
    assert await scan_file(clamd.address, path, seconds=5) == Verdict(False, SIGNATURE)


def test_an_address_is_a_host_and_a_port() -> None:
    assert parse_address("clamd.internal:3310") == ("clamd.internal", 3310)
    assert parse_address("[::1]:3310") == ("[::1]", 3310)


async def test_no_daemon_is_scanner_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"x")
    with socket.socket() as held:  # bound, not listening: nothing answers there
        held.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(ScannerUnavailable) as raised:
            await scan_file(address, path, seconds=5)
    assert str(raised.value).startswith(f"clamd at {address}: ConnectionRefusedError")


@pytest.fixture
async def answering(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A daemon that reads the stream and answers ``request.param`` (None: never answers)."""
    reply: bytes | None = request.param

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        while length := int.from_bytes(await reader.readexactly(4), "big"):
            await reader.readexactly(length)
        if reply is None:
            await asyncio.sleep(3600)
        writer.write(reply or b"")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answering", "verdict"),
    [
        (b"stream: Evil.\xff.Sig FOUND\0", Verdict(False, "Evil.\ufffd.Sig")),
        (b"stream: OK\0", Verdict(clean=True)),
    ],
    indirect=["answering"],
)
async def test_a_reply_is_read_as_utf_8_whatever_its_bytes(
    answering: str, verdict: Verdict, tmp_path: Path
) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"x" * 10)
    assert await scan_file(answering, path, seconds=5) == verdict


@pytest.mark.parametrize("answering", [b"stream: Odd reply X\0"], indirect=True)
async def test_any_other_reply_is_unavailable_and_quoted_whole(
    answering: str, tmp_path: Path
) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"x")
    with pytest.raises(ScannerUnavailable) as raised:
        await scan_file(answering, path, seconds=5)
    assert str(raised.value) == "clamd answered 'stream: Odd reply X'"


@pytest.mark.parametrize("answering", [None], indirect=True)
async def test_a_daemon_that_never_answers_is_unavailable_in_time(
    answering: str, tmp_path: Path
) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"x")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ScannerUnavailable) as raised:
        await scan_file(answering, path, seconds=0.2)
    assert loop.time() - started < 2
    assert "TimeoutError" in str(raised.value)


async def test_the_file_is_streamed_in_bounded_chunks_to_the_daemons_host(tmp_path: Path) -> None:
    """Never read whole (an upload may be as large as its limit), and sent to the host named,
    not to this one: the daemon listens on another loopback address."""
    chunks: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\0")
        while length := int.from_bytes(await reader.readexactly(4), "big"):
            chunks.append(length)
            await reader.readexactly(length)
        writer.write(b"stream: OK\0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0)
    path = tmp_path / "scan.bin"
    path.write_bytes(b"x" * (3 * CHUNK + 1))
    try:
        address = f"127.0.0.2:{server.sockets[0].getsockname()[1]}"
        assert await scan_file(address, path, seconds=5) == Verdict(clean=True)
    finally:
        server.close()
    assert chunks == [CHUNK, CHUNK, CHUNK, 1]


async def test_ping_asks_the_daemons_host_and_takes_only_pong() -> None:
    """The daemon listens on another loopback address than this one's; anything but PONG is
    quoted (its first 200 bytes) in the refusal."""
    replies = [b"PONG\0", b"Y" * 300 + b"\0"]
    commands: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands.append(await reader.readuntil(b"\0"))
        writer.write(replies.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0)
    address = f"127.0.0.2:{server.sockets[0].getsockname()[1]}"
    try:
        await ping(address)
        with pytest.raises(ScannerUnavailable) as raised:
            await ping(address)
    finally:
        server.close()
    assert commands == [b"zPING\0", b"zPING\0"]
    assert str(raised.value) == f"clamd answered {b'Y' * 200!r} to PING"
