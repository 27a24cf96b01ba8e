"""One Settings object, read from the environment (prefix ``VETIFY_``) and validated at start-up."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VETIFY_", extra="ignore", frozen=True)

    env: Environment = Environment.development

    database_url: Annotated[
        SecretStr | None,
        Field(validation_alias=AliasChoices("VETIFY_DATABASE_URL", "DATABASE_URL")),
    ] = None
    """URL of the service's own role (owns nothing, no BYPASSRLS). Unset: embedded PostgreSQL."""

    redis_url: Annotated[
        SecretStr | None,
        Field(validation_alias=AliasChoices("VETIFY_REDIS_URL", "REDIS_URL")),
    ] = None
    """Shared state across replicas (rate limits, cache, as they come). Unset: none used."""

    database_owner_url: SecretStr | None = None
    """URL of the role that owns the schema; used only to run migrations."""

    data_dir: Path = Path(".vetify")
    """Where the embedded PostgreSQL keeps its cluster when no database URL is set."""

    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    public_url: str = "http://127.0.0.1:8000"
    """Base URL used in links the service hands out (invitations)."""

    trusted_origins: list[str] = Field(default_factory=list)
    """Origins, besides that of ``public_url``, whose pages may send cookie-authenticated
    unsafe requests (and log in)."""

    session_cookie_secure: bool = True
    session_idle_timeout_minutes: int = Field(default=60, ge=1)
    session_absolute_timeout_hours: int = Field(default=12, ge=1)
    api_token_default_days: int = Field(default=90, ge=1, le=3650)
    invitation_valid_hours: int = Field(default=72, ge=1)

    @field_validator("trusted_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # A typo here would silently refuse (or, worse, never match) a front end's requests.
        for entry in value:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in "/":
                raise ValueError(f"trusted origin {entry!r} is not scheme://host[:port]")
        return value

    @model_validator(mode="after")
    def _roles_are_distinct(self) -> Settings:
        if self.database_url and self.database_owner_url:
            app_user = make_url(self.database_url.get_secret_value()).username
            owner_user = make_url(self.database_owner_url.get_secret_value()).username
            if app_user == owner_user:
                raise ValueError(
                    "VETIFY_DATABASE_URL must use a role other than the schema owner "
                    "(VETIFY_DATABASE_OWNER_URL): row-level security does not bind the owner"
                )
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None
