"""One Settings object, read from the environment (prefix ``VETIFY_``) and validated at start-up."""

from __future__ import annotations

from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated

from limits import parse
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
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

    session_cookie_secure: bool = True
    session_idle_timeout_minutes: int = Field(default=60, ge=1)
    session_absolute_timeout_hours: int = Field(default=12, ge=1)
    api_token_default_days: int = Field(default=90, ge=1, le=3650)
    invitation_valid_hours: int = Field(default=72, ge=1)

    login_free_failures: int = Field(default=3, ge=1, le=10_000)
    """Failed log-ins per account before each further one blocks it for 1, 2, 4... s."""
    login_lockout_failures: int = Field(default=10, ge=2, le=10_000)
    """Failed log-ins per account that lock it for ``login_lockout_minutes``."""
    login_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)

    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Comma-separated IPs/CIDRs of the proxies in front of the service (load balancer,
    ingress). Only a request arriving from one of them has its ``X-Forwarded-For`` (client IP)
    and ``X-Forwarded-Proto`` (HTTPS) believed."""
    cors_allow_origins: Annotated[list[str], NoDecode] = []
    """Comma-separated origins (``https://app.example.com``) whose browser scripts may call
    the API with credentials. Empty: no cross-origin access."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body outside upload routes; a larger one is a 413."""
    max_json_depth: int = Field(default=32, ge=4, le=256)
    """Deepest nesting of arrays/objects a JSON body may have."""

    # Rate limits, in `limits` notation ("N/second|minute|hour|day"), moving windows.
    rate_limit_anonymous: str = "120/minute"
    """Per client IP, requests without valid credentials (including failed ones)."""
    rate_limit_user: str = "600/minute"
    """Per user, over all their sessions and API tokens."""
    rate_limit_token: str = "300/minute"  # noqa: S105 - a rate, not a secret
    """Per API token."""
    rate_limit_login: str = "20/minute"
    """Per client IP: log-in attempts (also accepting invitations, which takes a password)."""
    rate_limit_signup: str = "10/hour"
    """Per client IP: new clinics."""
    rate_limit_token_create: str = "20/hour"  # noqa: S105 - a rate, not a secret
    """Per user: new API tokens."""
    rate_limit_upload: str = "120/hour"
    """Per user: file uploads."""
    rate_limit_scale: float = Field(default=1.0, gt=0, le=100_000)
    """Multiplies every quota above and the plans' API quotas: for load tests and test
    stages that send far more than a clinic does. Limits still apply; 1 in production."""

    @field_validator("trusted_proxies", "cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ip_network(entry, strict=False)  # raises ValueError naming the entry
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if (
                origin == "*"
                or not origin.startswith(("https://", "http://"))
                or (origin.rstrip("/").count("/") > 2)
            ):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.rstrip("/") for origin in value]

    @field_validator(
        "rate_limit_anonymous",
        "rate_limit_user",
        "rate_limit_token",
        "rate_limit_login",
        "rate_limit_signup",
        "rate_limit_token_create",
        "rate_limit_upload",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse(value)  # raises ValueError on a malformed limit
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
