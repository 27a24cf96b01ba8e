"""A userspace TCP proxy that injects latency, connection resets, refusals and black holes (the
kernel here has no netem). Runs its own event loop in a thread so sync and async tests can both
drive it. It sits in front of anything that speaks TCP: PostgreSQL, Redis, Stripe's API, a mail
relay, S3, clamd."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.latency = 0.0
        """Seconds added before each chunk is forwarded, both directions."""
        self.refuse = False
        """Reset new connections at once (the service looks down)."""
        self.hold = False
        """Accept new connections and never answer nor forward them (a black hole: a peer that
        hangs, or a partition that drops packets). Held ones are cut by ``reset_all``."""
        self.connections = 0
        """Connections accepted so far (refused and held ones included)."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def heal(self) -> None:
        """No fault on new connections (open ones are left as they are)."""
        self.latency = 0.0
        self.refuse = self.hold = False

    def reset_all(self) -> None:
        """Abort every open connection with a TCP reset, as a crashed peer or network would."""
        self._call(self._reset_all())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _shutdown(self) -> None:
        """Stop accepting, reset every connection and wait for their handlers to end: a handler
        left pending when the loop closes is destroyed mid-way (asyncio says so on stderr)."""
        if self._server is not None:
            self._server.close()
        await self._reset_all()
        handlers = asyncio.all_tasks() - {asyncio.current_task()}
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _reset_all(self) -> None:
        for writer in list(self._writers):
            _abort(writer)

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        if self.refuse:
            _abort(client_writer)
            return
        if self.hold:
            self._writers.add(client_writer)
            try:
                await client_reader.read()  # until the client or reset_all ends it
            except (ConnectionError, OSError):
                pass
            finally:
                self._writers.discard(client_writer)
                client_writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(client_writer)
            return
        self._writers |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
            )
        finally:
            self._writers -= {client_writer, upstream_writer}
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer.can_write_eof() and not writer.is_closing():
                with contextlib.suppress(OSError):
                    writer.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.fileno() != -1:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
