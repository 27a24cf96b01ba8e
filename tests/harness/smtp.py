"""A local mail relay: aiosmtpd over real SMTP (AUTH LOGIN/PLAIN), keeping what it is sent."""

from __future__ import annotations

import email
import email.policy
import logging
import ssl
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
    envelopes: list[tuple[str, tuple[str, ...], bool]] = field(default_factory=list)
    """Each message's sender, recipients and whether it came over TLS, as the SMTP session said."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.envelopes.clear()

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
            self.relay.envelopes.append(
                (envelope.mail_from, tuple(envelope.rcpt_tos), session.ssl is not None)
            )
        return "250 OK"


@contextmanager
def smtp_relay(
    password: str | None, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[Relay]:
    """A relay that takes mail only from ``USERNAME`` with ``password`` (as production's does),
    or from anyone when ``password`` is None; offering STARTTLS with ``tls`` (and then taking
    credentials only over TLS)."""

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (USERNAME, password)
        return AuthResult(success=ok, handled=False)

    # aiosmtpd logs the addresses it is given, as a real relay does: that relay is the outside
    # world, not the service whose records the leak watch searches.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    relay = Relay(host, free_port())
    controller = Controller(
        _Inbox(relay),
        hostname=relay.host,
        port=relay.port,
        authenticator=authenticate,
        # Plain on the loopback unless the test offers TLS; production uses STARTTLS.
        auth_require_tls=tls is not None,
        auth_required=password is not None,
        tls_context=tls,
    )
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()
