"""The fakes built on the standard library's ``socketserver`` (Stripe, Sentry, an OTLP
receiver, clamd) run on a thread of the test process, started and stopped here.

Two defaults of ``socketserver`` cost every test that uses one: ``serve_forever`` looks for a
stop every 0.5 s, so each stop waited up to half a second; and a handler's answer written in two
parts (``http.server`` sends the head, then the body) waits on a kept-alive connection for the
client's delayed ACK, 40 ms a call, unless its handler sets ``disable_nagle_algorithm``."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager

POLL_SECONDS = 0.05
"""How often a serving loop looks for its stop."""


@contextmanager
def serve_in_thread(server: socketserver.BaseServer, name: str) -> Iterator[None]:
    """``server`` answers on a daemon thread (a stalled handler never keeps the process alive)
    until the block ends; then it is stopped and its socket closed."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, name=name, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
