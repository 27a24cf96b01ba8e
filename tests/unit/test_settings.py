"""Settings from the environment: database URLs, their alias, and the role separation check."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from app.settings import Environment, Settings

APP_URL = "postgresql+asyncpg://vetify_app@db.internal:5432/vetify"
OWNER_URL = "postgresql+asyncpg://vetify_owner:pw@db.internal:5432/vetify"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("VETIFY_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DATABASE_URL", raising=False)


def test_defaults_are_embedded() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.embedded is True
    assert settings.env is Environment.development


def test_vetify_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_DATABASE_URL", APP_URL)
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == APP_URL
    assert settings.embedded is False


def test_database_url_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", APP_URL)
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == APP_URL
    assert settings.embedded is False


def test_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    assert "pw@" not in repr(Settings())


def test_distinct_roles_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_DATABASE_URL", APP_URL)
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    assert Settings().database_owner_url is not None


@pytest.mark.parametrize("app_var", ["VETIFY_DATABASE_URL", "DATABASE_URL"])
def test_same_role_refused(monkeypatch: pytest.MonkeyPatch, app_var: str) -> None:
    monkeypatch.setenv(app_var, "postgresql+asyncpg://vetify_owner@other-host/vetify")
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    with pytest.raises(ValidationError, match="role other than the schema owner"):
        Settings()


def test_same_role_refused_when_passed_directly() -> None:
    with pytest.raises(ValidationError, match="role other than the schema owner"):
        Settings(database_url=OWNER_URL, database_owner_url=OWNER_URL)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VETIFY_ENV", "staging"),
        ("VETIFY_DB_POOL_SIZE", "0"),
        ("VETIFY_DB_STATEMENT_TIMEOUT_MS", "10"),
        ("VETIFY_API_TOKEN_DEFAULT_DAYS", "3651"),
    ],
)
def test_bad_values_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.env = Environment.production  # type: ignore[misc]


def test_attachments_default_to_a_local_directory_and_20_mib() -> None:
    settings = Settings()
    assert settings.upload_max_bytes == 20 * 1024 * 1024
    assert settings.attachments_root == settings.data_dir / "attachments"
    assert settings.clamd_address is None


def test_s3_storage_needs_a_bucket_and_keeps_its_credentials_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VETIFY_STORAGE_BACKEND", "s3")
    with pytest.raises(ValidationError, match="VETIFY_S3_BUCKET"):
        Settings()
    monkeypatch.setenv("VETIFY_S3_BUCKET", "vetify-files")
    monkeypatch.setenv("VETIFY_S3_SECRET_ACCESS_KEY", "hunter2")
    settings = Settings()
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("address", ["clamd", "clamd:", ":3310", "clamd:3310:1", "clam d:3310"])
def test_a_clamd_address_is_host_and_port(address: str) -> None:
    with pytest.raises(ValidationError):
        Settings(clamd_address=address)
