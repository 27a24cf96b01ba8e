"""Mail out (app/kit/mail.py) against a real SMTP relay (aiosmtpd, tests/harness/smtp.py) with
each of the settings an operator gives it: the relay's host (on another loopback address than
this one's), STARTTLS with the relay's certificate checked, credentials only where configured,
and a relay that never answers cut at the configured timeout. Without a relay:
tests/unit/test_mail.py; the jobs that send: tests/integration/test_account_lifecycle.py."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import aiosmtplib
import pytest
import trustme
from pydantic import SecretStr

from app.kit.mail import Mail, Mailer
from app.settings import Settings
from tests.harness.smtp import USERNAME, smtp_relay

RELAY_HOST = "127.0.0.2"  # not 127.0.0.1, which a client that ignored its host would reach
MAIL = Mail(to=("owner@example.org", "vet@example.org"), subject="Trial ends", text="In 3 days.")
SECRET = "relay secret"  # nosec B105  # pragma: allowlist secret


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def relay_tls(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(RELAY_HOST).configure_cert(context)
    return context


def _mailer(port: int, **settings: Any) -> Mailer:
    return Mailer(
        Settings(
            _env_file=None,
            smtp_host=RELAY_HOST,
            smtp_port=port,
            mail_from="Vetify <notices@vetify.example>",
            **settings,
        )
    )


async def test_a_mail_goes_over_starttls_with_the_credentials_to_every_recipient(
    authority: trustme.CA, relay_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    with authority.cert_pem.tempfile() as ca_file:
        monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the relay's CA, as a trust store would
        with smtp_relay(SECRET, host=RELAY_HOST, tls=relay_tls) as relay:
            mailer = _mailer(
                relay.port,
                smtp_starttls=True,
                smtp_username=USERNAME,
                smtp_password=SecretStr(SECRET),
            )
            assert await mailer.send(MAIL) is True
    [message] = relay.received()
    assert relay.envelopes == [
        ("notices@vetify.example", ("owner@example.org", "vet@example.org"), True)
    ]
    assert message["From"] == "Vetify <notices@vetify.example>"
    assert message["To"] == "owner@example.org, vet@example.org"
    assert message["Subject"] == "Trial ends"
    assert message.get_content().strip() == "In 3 days."


async def test_with_starttls_off_a_mail_goes_plain_and_without_credentials_when_none_are_set(
    relay_tls: ssl.SSLContext,
) -> None:
    """STARTTLS off means off, even where the relay offers it (here with a certificate this
    host does not trust: trying it would fail the send)."""
    with smtp_relay(None, host=RELAY_HOST, tls=relay_tls) as relay:
        assert await _mailer(relay.port, smtp_starttls=False).send(MAIL) is True
    assert [tls for _, _, tls in relay.envelopes] == [False]
    assert len(relay.received()) == 1


@pytest.fixture
def silent_relay() -> Iterator[int]:
    """A relay that takes the connection and never greets."""
    with socket.socket() as listening:
        listening.bind((RELAY_HOST, 0))
        listening.listen()
        yield listening.getsockname()[1]


async def test_a_relay_that_never_answers_is_given_up_at_the_timeout(silent_relay: int) -> None:
    mailer = _mailer(silent_relay, smtp_starttls=False, smtp_timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(aiosmtplib.SMTPException):  # the job retries it
        await asyncio.wait_for(mailer.send(MAIL), 20)
    assert time.monotonic() - started < 5  # aiosmtplib's own default is 60 s
