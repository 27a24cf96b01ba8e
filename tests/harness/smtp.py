"""A local mail relay: aiosmtpd over real SMTP (AUTH LOGIN/PLAIN), keeping what it is sent."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.db.embedded import free_port

USERNAME = "vetify"


@dataclass
class Relay:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)


class _Inbox:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.relay._lock:
            self.relay.messages.append(message)
        return "250 OK"


@contextmanager
def smtp_relay(password: str) -> Iterator[Relay]:
    """A relay that takes mail only from ``USERNAME`` with ``password`` (as production's does)."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USERNAME, password)
        return AuthResult(success=ok, handled=False)

    relay = Relay("127.0.0.1", free_port())
    controller = Controller(
        _Inbox(relay),
        hostname=relay.host,
        port=relay.port,
        authenticator=authenticate,
        auth_require_tls=False,  # plain on the loopback only; production uses STARTTLS
        auth_required=True,
    )
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
