"""Settings: where values come from (environment, ``_FILE`` secrets, ``.env``), the role
separation check, production's refusals, and errors that name settings but never values."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError

from app.production import refusal
from app.settings import (
    DEVELOPMENT_KEYRING,
    ConfigurationError,
    Environment,
    Settings,
    env_name,
    parse_keyring,
)

# Secrets built at run time, so the source holds none for a scanner to flag.
STRONG = "Zq7" + "x" * 21
APP_URL = "postgresql+asyncpg://vetify_app@db.internal:5432/vetify"
OWNER_URL = f"postgresql+asyncpg://vetify_owner:{STRONG}@db.internal:5432/vetify"
PRODUCTION = {
    "VETIFY_ENV": "production",
    "VETIFY_DATABASE_URL": f"postgresql+asyncpg://vetify_app:{STRONG}@db.internal/vetify",
    "VETIFY_PUBLIC_URL": "https://vetify.example",
    # pragma: allowlist nextline secret - built at run time from STRONG, above
    "VETIFY_STRIPE_API_KEY": "sk_test_" + STRONG,
    # pragma: allowlist nextline secret - built at run time from STRONG, above
    "VETIFY_STRIPE_WEBHOOK_SECRET": "whsec_" + STRONG,
    "VETIFY_ENCRYPTION_KEYS": "k1:" + base64.b64encode(os.urandom(32)).decode(),
}
SECRET_FIELDS = [
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("VETIFY_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    # Away from any .env in the checkout.
    monkeypatch.chdir(tmp_path)


def production(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> None:
    for name, value in {**PRODUCTION, **changes}.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def refused(monkeypatch: pytest.MonkeyPatch, **changes: str | None) -> ConfigurationError:
    production(monkeypatch, **changes)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    return info.value


# -- sources ----------------------------------------------------------------------------------
def test_defaults_are_embedded() -> None:
    settings = Settings()
    assert settings.database_url is None
    assert settings.embedded is True
    assert settings.env is Environment.development
    assert settings.debug is False


@pytest.mark.parametrize("variable", ["VETIFY_DATABASE_URL", "DATABASE_URL"])
def test_database_url_from_either_variable(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, APP_URL)
    settings = Settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == APP_URL
    assert settings.embedded is False


def test_an_owner_url_alone_means_an_external_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 16, defect 7: `vetify migrate` then migrated an embedded database instead.
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    assert Settings().embedded is False


def test_url_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    assert STRONG not in repr(Settings())
    assert STRONG not in str(Settings().model_dump())


@pytest.mark.parametrize("name", SECRET_FIELDS)
def test_every_secret_can_come_from_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    value = f"postgresql+asyncpg://vetify_{name}:{STRONG}@db.internal/vetify"
    key = base64.b64encode(STRONG.encode()[:32].ljust(32, b"k")).decode()
    if name == "encryption_keys":  # a keyring, not a URL
        value = "k1:" + key
    elif name == "audit_signing_key":  # a key
        value = key
    (tmp_path / "secret").write_text(value + "\n\n")
    monkeypatch.setenv(f"{env_name(name)}_FILE", str(tmp_path / "secret"))
    secret = getattr(Settings(), name)
    # One trailing newline is the file's end; anything more is the secret's own.
    assert secret.get_secret_value() == value + "\n"


def test_secret_files_are_found_beside_their_fields() -> None:
    assert {"database_url", "database_owner_url", "redis_url"} <= set(SECRET_FIELDS)


@pytest.mark.parametrize(
    ("direct", "file_variable"),
    [
        ("VETIFY_DATABASE_URL", "VETIFY_DATABASE_URL_FILE"),
        ("DATABASE_URL", "VETIFY_DATABASE_URL_FILE"),
        ("VETIFY_DATABASE_OWNER_URL", "VETIFY_DATABASE_OWNER_URL_FILE"),
    ],
)
def test_value_and_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, direct: str, file_variable: str
) -> None:
    (tmp_path / "secret").write_text(OWNER_URL)
    monkeypatch.setenv(direct, OWNER_URL)
    monkeypatch.setenv(file_variable, str(tmp_path / "secret"))
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert list(info.value.problems) == [file_variable.removeprefix("VETIFY_")[:-5].lower()]
    assert direct in str(info.value)
    assert STRONG not in str(info.value)


def test_unreadable_secret_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VETIFY_REDIS_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="VETIFY_REDIS_URL: cannot read"):
        Settings()


def test_dotenv_is_read_in_development(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VETIFY_DB_POOL_SIZE=3\n")
    assert Settings().db_pool_size == 3


@pytest.mark.parametrize("env", ["production", "test"])
def test_dotenv_is_ignored_in_production_and_test(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str
) -> None:
    (tmp_path / ".env").write_text("VETIFY_DB_POOL_SIZE=3\n")
    production(monkeypatch, VETIFY_ENV=env)
    assert Settings().db_pool_size == 10


# -- refusals name the setting, never the value ----------------------------------------------
def test_distinct_roles_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETIFY_DATABASE_URL", APP_URL)
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    assert Settings().database_owner_url is not None


@pytest.mark.parametrize("app_var", ["VETIFY_DATABASE_URL", "DATABASE_URL"])
def test_same_role_refused(monkeypatch: pytest.MonkeyPatch, app_var: str) -> None:
    monkeypatch.setenv(app_var, "postgresql+asyncpg://vetify_owner@other-host/vetify")
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", OWNER_URL)
    with pytest.raises(ConfigurationError, match="role other than") as info:
        Settings()
    assert list(info.value.problems) == ["database_owner_url"]
    assert STRONG not in str(info.value)


def test_same_role_refused_when_passed_directly() -> None:
    with pytest.raises(ConfigurationError, match="role other than"):
        Settings(database_url=OWNER_URL, database_owner_url=OWNER_URL)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VETIFY_ENV", "staging"),
        ("VETIFY_DB_POOL_SIZE", "0"),
        ("VETIFY_DB_POOL_SIZE", "lots-of-secret-sauce"),
        ("VETIFY_DB_STATEMENT_TIMEOUT_MS", "10"),
        ("VETIFY_API_TOKEN_DEFAULT_DAYS", "3651"),
    ],
)
def test_bad_values_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert list(info.value.problems) == [name.removeprefix("VETIFY_").lower()]
    assert "secret-sauce" not in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.env = Environment.production  # type: ignore[misc]


# -- production ---------------------------------------------------------------------------------
def test_a_sound_production_configuration_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    production(
        monkeypatch,
        VETIFY_REDIS_URL=f"rediss://:{STRONG}@cache.internal:6379/0",
        VETIFY_DATABASE_OWNER_URL=OWNER_URL,
    )
    assert Settings().env is Environment.production


def test_production_names_every_fault_at_once_and_no_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = refused(
        monkeypatch,
        VETIFY_DATABASE_URL=None,
        VETIFY_DEBUG="true",
        VETIFY_SESSION_COOKIE_SECURE="false",
        VETIFY_PUBLIC_URL="http://vetify.example",
        VETIFY_REDIS_URL="redis://:{}@cache.internal:6379/0".format("changeme"),
        VETIFY_DATABASE_OWNER_URL="postgresql+asyncpg://vetify_owner:{}@db/vetify".format(
            "Sh0rt-s3cret"
        ),
        VETIFY_DB_POOL_SIZE="0",
        VETIFY_ENCRYPTION_KEYS=None,
    )
    assert set(error.problems) == {
        "encryption_keys",
        "database_url",
        "debug",
        "session_cookie_secure",
        "public_url",
        "redis_url",
        "database_owner_url",
        "db_pool_size",
    }
    for name in error.problems:
        assert env_name(name) in str(error)
    assert "changeme" not in str(error)
    assert "Sh0rt-s3cret" not in str(error)


# URLs as templates and passwords apart: the weak passwords are the point, not a leak.
DB = "postgresql+asyncpg://{user}:{password}@db.internal/vetify"


@pytest.mark.parametrize(
    ("setting", "value", "password"),
    [
        ("database_url", DB.replace("{user}", "postgres"), STRONG),
        ("database_url", DB.replace("{user}", "vetify_app"), "postgres"),
        ("database_url", DB.replace("{user}", "vetify_app"), "password"),
        ("database_url", DB.replace("{user}", "vetify_app"), "ChangeMe"),
        ("database_url", DB.replace("{user}", "vetify_app"), "vetify"),
        ("database_url", DB.replace("{user}", "vetify_app"), "vetify_app"),
        ("database_url", DB.replace("{user}", "vetify_app"), "15-characters!!"),
        ("database_url", "not a url", ""),
        ("database_owner_url", DB.replace("{user}", "vetify_owner"), "admin"),
        ("redis_url", "redis://cache.internal:6379/0", ""),
        ("redis_url", "redis://default:{password}@cache.internal:6379/0", "redis"),
        ("public_url", "http://vetify.example", ""),
        ("public_url", "vetify.example", ""),
        ("debug", "1", ""),
        ("session_cookie_secure", "0", ""),
    ],
)
def test_production_refuses(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str, password: str
) -> None:
    value = value.replace("{password}", password)
    error = refused(monkeypatch, **{env_name(setting): value})
    assert list(error.problems) == [setting]
    assert len(value) < 2 or value not in str(error)
    if password:
        assert password not in str(error)


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("vetify_app", "postgres"),
        ("vetify_app", "password"),
        ("vetify_app", "changeme"),
        ("vetify_app", "vetify"),
        # Long enough, but the first guess of anyone who reads the URL's user name.
        ("vetify_service_role", "Vetify_Service_Role"),
    ],
)
def test_production_says_a_guessable_password_is_guessable(
    monkeypatch: pytest.MonkeyPatch, user: str, password: str
) -> None:
    url = DB.replace("{user}", user).replace("{password}", password)
    error = refused(monkeypatch, VETIFY_DATABASE_URL=url)
    assert error.problems == {"database_url": "uses a well-known or guessable secret"}


def test_production_does_not_refuse_what_development_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VETIFY_DEBUG", "true")
    monkeypatch.setenv("VETIFY_SESSION_COOKIE_SECURE", "false")
    monkeypatch.setenv("VETIFY_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert Settings().debug is True


def test_a_secret_left_at_its_coded_default_is_refused() -> None:
    """Settings added later (signing keys, API keys) get this rule without a line of their own."""
    coded = "dev-only-signing-" + "0123456789abcdef"
    field = Field(default=SecretStr(coded))
    assert refusal("signing_key", SecretStr(coded), field) == (
        "is the default written in the code; set a secret of your own"
    )
    assert refusal("signing_key", SecretStr("short"), field) is not None
    assert refusal("signing_key", SecretStr(STRONG), field) is None


def test_attachments_default_to_a_local_directory_and_20_mib() -> None:
    settings = Settings()
    assert settings.upload_max_bytes == 20 * 1024 * 1024
    assert settings.attachments_root == settings.data_dir / "attachments"
    assert settings.clamd_address is None


def test_s3_storage_needs_a_bucket_and_keeps_its_credentials_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VETIFY_STORAGE_BACKEND", "s3")
    with pytest.raises(ConfigurationError, match="VETIFY_S3_BUCKET"):
        Settings()
    monkeypatch.setenv("VETIFY_S3_BUCKET", "vetify-files")
    monkeypatch.setenv("VETIFY_S3_SECRET_ACCESS_KEY", "hunter2")
    settings = Settings()
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("address", ["clamd", "clamd:", ":3310", "clamd:3310:1", "clam d:3310"])
def test_a_clamd_address_is_host_and_port(address: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(clamd_address=address)


def test_several_webhook_secrets_while_one_rolls() -> None:
    assert Settings(_env_file=None).stripe_webhook_secrets == []
    rolling = Settings(_env_file=None, stripe_webhook_secret=" whsec_old ,whsec_new,")
    assert rolling.stripe_webhook_secrets == ["whsec_old", "whsec_new"]


# -- field-level encryption's keys (ADR 0028) ---------------------------------------------------
def _key(fill: int) -> str:
    return base64.b64encode(bytes([fill]) * 32).decode()


def test_a_keyring_is_read_in_order_in_standard_or_url_safe_base64() -> None:
    url_safe = base64.urlsafe_b64encode(bytes([251]) * 32).decode().rstrip("=")
    assert parse_keyring(f"new:{_key(1)}, old:{url_safe}") == {
        "new": bytes([1]) * 32,
        "old": bytes([251]) * 32,
    }
    assert list(parse_keyring(f"b:{_key(2)},a:{_key(1)}")) == ["b", "a"]  # the first wraps


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("", "key 1: write each key as id:base64"),
        (_key(1), "key 1: write each key as id:base64"),
        (f"a b:{_key(1)}", "key 1: write each key as id:base64"),
        (f"a:{_key(1)},a:{_key(2)}", "key 2: the id a is listed twice"),
        ("a:not*base64", "key a: not base64"),
        ("a:" + base64.b64encode(bytes(16)).decode(), "key a: must be 32 bytes (256 bits)"),
    ],
)
def test_a_keyring_not_so_written_is_refused_without_its_keys(
    monkeypatch: pytest.MonkeyPatch, written: str, said: str
) -> None:
    monkeypatch.setenv("VETIFY_ENCRYPTION_KEYS", written)
    with pytest.raises(ConfigurationError) as info:
        Settings()
    assert said in info.value.problems["encryption_keys"]
    for key in written.split(","):
        assert key.partition(":")[2] not in str(info.value) or not key.partition(":")[2]


def test_outside_production_no_keys_means_the_development_key() -> None:
    assert Settings().keyring == parse_keyring(DEVELOPMENT_KEYRING)


def test_production_needs_keys_of_its_own_or_a_kms_key(monkeypatch: pytest.MonkeyPatch) -> None:
    error = refused(monkeypatch, VETIFY_ENCRYPTION_KEYS=None)
    assert list(error.problems) == ["encryption_keys"]
    assert "required in production" in error.problems["encryption_keys"]
    development = DEVELOPMENT_KEYRING.partition(":")[2]
    error = refused(monkeypatch, VETIFY_ENCRYPTION_KEYS=f"mine:{_key(3)},renamed:{development}")
    assert error.problems == {
        "encryption_keys": "holds the development key, which is written in the code"
    }
    assert development not in str(error)
    production(monkeypatch, VETIFY_ENCRYPTION_KEYS=None, VETIFY_KMS_KEY_ID="alias/vetify")
    assert Settings().kms_key_id == "alias/vetify"


# -- record retention (ADR 0035) --------------------------------------------------------------
def test_record_retention_minimums_are_years_by_country_with_one_for_any_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().record_minimum_years("GB") == 10  # the default: *=10
    monkeypatch.setenv("VETIFY_RECORD_RETENTION_YEARS", " *=10, gb=6 ,DE=3")
    settings = Settings()
    assert settings.record_retention_years == {"*": 10, "GB": 6, "DE": 3}
    assert [settings.record_minimum_years(c) for c in ("GB", "DE", "FR", None)] == [6, 3, 10, 10]
    given = Settings(record_retention_years={"*": 12, "PT": 5})  # as a mapping, not text
    assert [given.record_minimum_years(c) for c in ("PT", "GB")] == [5, 12]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("GB=6", "any other country too"),
        ("*=0", "not between 1 and 100"),
        ("*=101", "not between 1 and 100"),
        ("*=10,GBR=6", "not a country code"),
        ("*=10,GB", "COUNTRY=YEARS pairs"),
        ("*=ten", "valid integer"),
    ],
)
def test_a_malformed_record_retention_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, said: str
) -> None:
    monkeypatch.setenv("VETIFY_RECORD_RETENTION_YEARS", value)
    with pytest.raises(ConfigurationError, match="VETIFY_RECORD_RETENTION_YEARS") as info:
        Settings()
    assert said in str(info.value)
