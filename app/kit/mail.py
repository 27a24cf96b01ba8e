"""Mail out through the configured relay (SMTP, aiosmtplib): notices to clinics.

Sent from jobs, never from a request: a slow or absent relay delays a notice, not an answer,
and the job queue retries a failed send.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from app.settings import Settings

log = logging.getLogger("vetify.mail")


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    text: str


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, mail: Mail) -> bool:
        """True once the relay took it; False if no relay is configured (logged instead).
        A relay that refuses or cannot be reached raises (the job retries)."""
        settings = self.settings
        if settings.smtp_host is None:
            log.warning("no mail relay (VETIFY_SMTP_HOST): not sent: %r", mail.subject)
            return False
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = ", ".join(mail.to)
        message["Subject"] = mail.subject
        message.set_content(mail.text)
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            start_tls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_seconds,
        )
        return True
