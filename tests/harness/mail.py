"""What the service mailed, read as its recipient would: the relay's messages and their links."""

from __future__ import annotations

import re
from email.message import EmailMessage

from app.settings import Settings
from tests.harness.queue import drain
from tests.harness.smtp import Relay

INVITATION = "/invitations/accept"
VERIFICATION = "/verify-email"
PASSWORD_RESET = "/reset-password"


def mails_to(mailbox: Relay, address: str) -> list[EmailMessage]:
    return [m for m in mailbox.received() if m["To"] == address]


def tokens_in(message: EmailMessage, settings: Settings, path: str) -> list[str]:
    """The tokens of the links to ``path`` on the service's public URL in the mail's text."""
    text = message.get_content()
    return re.findall(rf"{re.escape(settings.public_url + path)}\?token=(\S+)", text)


async def mailed_tokens(settings: Settings, mailbox: Relay, to: str, path: str) -> list[str]:
    """Run the jobs that are due (the mail is sent by them), then the tokens of every link to
    ``path`` mailed to ``to``, oldest first."""
    await drain(settings)
    return [t for m in mails_to(mailbox, to) for t in tokens_in(m, settings, path)]


async def mailed_token(settings: Settings, mailbox: Relay, to: str, path: str) -> str:
    """As :func:`mailed_tokens`: the newest, which must exist."""
    tokens = await mailed_tokens(settings, mailbox, to, path)
    assert tokens, f"no link to {path} mailed to {to}: {[m['Subject'] for m in mailbox.received()]}"
    return tokens[-1]
