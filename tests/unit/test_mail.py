"""Mail without a relay configured is logged, not lost in silence."""

from __future__ import annotations

import logging

from app.kit.mail import Mail, Mailer
from app.settings import Settings


async def test_without_a_relay_a_notice_is_logged_and_reported_unsent(caplog) -> None:
    mailer = Mailer(Settings(_env_file=None, smtp_host=None))
    with caplog.at_level(logging.WARNING, logger="vetify.mail"):
        sent = await mailer.send(Mail(to=("owner@example.com",), subject="Hello", text="Hi"))
    assert sent is False
    assert "no mail relay" in caplog.text
    assert "Hello" in caplog.text
