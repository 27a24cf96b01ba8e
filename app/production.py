"""What ``VETIFY_ENV=production`` refuses: checks on each setting's value (run while Settings
are validated), and one on the database role the service really connects as (at start-up).

Each check returns why a value is refused, in words that never contain the value.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

MIN_SECRET_LENGTH = 16
# Defaults of images and tutorials, and this project's own names: the first guesses of anyone.
WEAK_SECRETS = frozenset(
    {
        "postgres",
        "password",
        "passw0rd",
        "changeme",
        "change-me",
        "change_me",
        "vetify",
        "secret",
        "admin",
        "root",
        "redis",
        "example",
        "test",
        "default",
        "letmein",
        "123456",
        "12345678",
        "qwerty",
    }
)
SUPERUSER_NAMES = frozenset({"postgres"})


def refusal(name: str, value: Any, field: FieldInfo) -> str | None:
    """Why production cannot run with this setting's value, or None."""
    if name == "database_url" and value is None:
        return "required in production: the embedded database is for development only"
    if name in ("stripe_api_key", "stripe_webhook_secret") and value is None:
        return "required in production: clinics pay through Stripe"
    if name == "debug" and value:
        return "must be false in production: debug pages show tracebacks and settings"
    if name == "session_cookie_secure" and not value:
        return "must be true in production: session cookies must never travel over plain http"
    if name == "public_url" and not str(value).lower().startswith("https://"):
        return "must be an https:// URL in production"
    if isinstance(value, SecretStr):
        if name.endswith("_url"):
            return _url_refusal(name, value)
        return _secret_refusal(value.get_secret_value(), field)
    return None


def _url_refusal(name: str, value: SecretStr) -> str | None:
    try:
        url = make_url(value.get_secret_value())
    except (ArgumentError, ValueError):
        return "is not a valid URL"
    if name == "database_url" and (url.username or "") in SUPERUSER_NAMES:
        return (
            "connects as the PostgreSQL superuser; use the service's own role "
            "(not superuser, no BYPASSRLS)"
        )
    if not url.password:
        # PostgreSQL may authenticate by certificate, peer or IAM; a Redis without a password
        # lets anyone who reaches it read and reset rate limits.
        return "has no password: production Redis must require one" if "redis" in name else None
    return _weak(url.password, url.username)


def _secret_refusal(secret: str, field: FieldInfo) -> str | None:
    default = field.default
    if isinstance(default, SecretStr) and secret == default.get_secret_value():
        return "is the default written in the code; set a secret of your own"
    return _weak(secret, None)


def _weak(secret: str, username: str | None) -> str | None:
    if secret.lower() in WEAK_SECRETS or (username and secret.lower() == username.lower()):
        return "uses a well-known or guessable secret"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"secret is shorter than {MIN_SECRET_LENGTH} characters"
    return None


async def database_role_refusal(engine: AsyncEngine) -> str | None:
    """Ask PostgreSQL what the service's role may do: a superuser or a BYPASSRLS role is not
    bound by row-level security, whatever its name (ADR 0002)."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    if row.rolsuper:
        return "connects as a superuser role: row-level security would not apply"
    if row.rolbypassrls:
        return "connects as a role with BYPASSRLS: row-level security would not apply"
    return None
