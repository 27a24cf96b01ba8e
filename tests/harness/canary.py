"""Secret canaries: every secret the harness hands the app is unique to this run, so finding one
in a log record, an HTTP response (body or header) or the OpenAPI document proves a leak.

The services' passwords (PostgreSQL superuser and roles, Redis) are drawn here, once per run;
:class:`LeakWatch` looks for them in everything the app says. In the security stage (or with
``--leak-canary``) the root logger is opened to DEBUG, so asyncpg and uvicorn records are
searched too, and SQLAlchemy's statements with their parameters (INFO); what the database holds
is searched row by row as each test's database is dropped (``databases.tables_holding``), which
finds what SQLAlchemy's DEBUG log of result rows would show, and what no query read, at a
sixth of the cost of logging every row. Any finding fails the session, naming where it was
seen.

Personal data is watched the same way in log records (never in responses, which rightly answer
it back): a customer whose names, email and phone are drawn here is created, searched for,
changed and refused in the security stage (tests/security/test_personal_data_in_logs.py), and
any log record of the run holding one of them fails it. Records are searched as the service
writes them (app/observability/logs.py), its redaction included.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.kit.sealing import Keyring
from app.observability import logs
from app.settings import LogFormat, parse_keyring


def _draw(purpose: str) -> str:
    # Hex only: safe in any URL without escaping, and never a word that occurs by chance.
    return f"canary{purpose}{secrets.token_hex(12)}"


SUPERUSER_PASSWORD = _draw("su")
ROLE_PASSWORD = _draw("role")
REDIS_PASSWORD = _draw("redis")
S3_KEY_ID = _draw("s3id")
S3_SECRET = _draw("s3secret")
BACKUP_S3_KEY_ID = _draw("backups3id")
BACKUP_S3_SECRET = _draw("backups3secret")
BACKUP_KEY = _draw("backupkey")
# In Stripe's own shapes: the fake Stripe API checks the key's prefix, as Stripe does.
STRIPE_KEY = "sk_test_" + _draw("stripekey")
# pragma: allowlist nextline secret - a canary drawn per run, in Stripe's shape
STRIPE_WEBHOOK_SECRET = "whsec_" + _draw("whsec")
SMTP_PASSWORD = _draw("smtp")
SENTRY_KEY = _draw("sentry")
OPERATOR_TOKEN = _draw("operator")
METRICS_TOKEN = _draw("metrics")


def _as_key(drawn: str) -> str:
    """A canary as the base64 text of a 32-byte key (43 characters and a pad): what the app
    reads it as is a key like any other, and the canary is in what it was given."""
    return drawn + "A" * (43 - len(drawn)) + "="


ENCRYPTION_KEY = _as_key(_draw("kek"))
ENCRYPTION_KEYRING = f"harness:{ENCRYPTION_KEY}"
"""``VETIFY_ENCRYPTION_KEYS`` of every app, CLI and server the harness starts on its databases:
one keyring, so that what one seals another opens."""


def keyring() -> Keyring:
    """:data:`ENCRYPTION_KEYRING` as a process's keys (``keys.configure``): what a harness
    process seals for a server it starts, that server opens."""
    return Keyring.of(parse_keyring(ENCRYPTION_KEYRING))


AUDIT_SIGNING_KEY = _as_key(_draw("anchor"))
# Personal data: a customer a test creates with these (tests/security/test_personal_data_in_logs).
# The API answers them back, so they are searched in log records only.
PERSON_FIRST_NAME = _draw("first")
PERSON_LAST_NAME = _draw("last")
PERSON_EMAIL = f"{_draw('mail')}@example.com"
PERSON_PHONE = f"+3519{secrets.randbelow(10**10):010d}"
"""E.164 allows digits only: 14 of them, 10 drawn; a chance match in a run's logs is negligible."""
PERSONAL = (PERSON_FIRST_NAME, PERSON_LAST_NAME, PERSON_EMAIL, PERSON_PHONE)
ALL = (
    SUPERUSER_PASSWORD,
    ROLE_PASSWORD,
    REDIS_PASSWORD,
    S3_KEY_ID,
    S3_SECRET,
    BACKUP_S3_KEY_ID,
    BACKUP_S3_SECRET,
    BACKUP_KEY,
    STRIPE_KEY,
    STRIPE_WEBHOOK_SECRET,
    SMTP_PASSWORD,
    SENTRY_KEY,
    OPERATOR_TOKEN,
    METRICS_TOKEN,
    ENCRYPTION_KEY,
    AUDIT_SIGNING_KEY,
)


@dataclass
class LeakWatch:
    """Records where a canary was seen (never the text around it: that is the leak)."""

    canaries: tuple[str, ...] = ALL
    personal: tuple[str, ...] = PERSONAL
    """Searched in log records only (:meth:`scan_log`)."""
    leaks: list[str] = field(default_factory=list)
    where: str = "outside tests"
    inspected: int = 0
    logs_watched: bool = False

    def scan(self, text: str, source: str) -> None:
        self.inspected += 1
        for index, canary in enumerate(self.canaries):
            if canary in text:
                self.leaks.append(f"{self.where}: secret #{index} in {source}")

    def scan_log(self, text: str, source: str) -> None:
        """A log record: the secrets, and the personal data no log may hold."""
        self.scan(text, source)
        for index, value in enumerate(self.personal):
            if value in text:
                self.leaks.append(f"{self.where}: personal data #{index} in {source}")

    async def on_response(self, response: httpx.Response) -> None:
        """An httpx response hook: the body and every header of each response."""
        await response.aread()
        where = f"{response.request.method} {response.request.url.path}"
        self.scan(response.text, f"response body of {where}")
        self.scan(
            "\n".join(f"{k}: {v}" for k, v in response.headers.items()),
            f"response headers of {where}",
        )

    def stored(self, tables: list[str]) -> None:
        """Tables found holding a canary in some row (``databases.tables_holding``)."""
        self.inspected += 1
        self.leaks.extend(f"{self.where}: a secret in a row of {table}" for table in tables)

    def hooks(self) -> dict[str, list[Callable[..., Any]]]:
        return {"response": [self.on_response]}


class LeakHandler(logging.Handler):
    """Searches each record as the service writes it (app/observability/logs.py: its fields,
    redacted, in JSON), traceback included."""

    def __init__(self, watch: LeakWatch):
        super().__init__(level=logging.DEBUG)
        self.watch = watch
        logs.prepare(self, LogFormat.json)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is not ours to fail on
            text = str(record.msg)
        self.watch.scan_log(text, f"log record of {record.name} ({record.levelname})")


WATCH = LeakWatch()
