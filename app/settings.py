"""One Settings object, read from the environment (prefix ``VETIFY_``) and validated at start-up.

Every secret (a ``SecretStr`` field) can also come from a file: ``VETIFY_<NAME>_FILE=/path``
(Docker and Kubernetes secrets, Vault Agent). A ``.env`` file in the working directory is read
outside production and test. With ``VETIFY_ENV=production`` the rules in
:mod:`app.production` refuse unsafe values. Any refusal is a :class:`ConfigurationError` that
names every setting at fault and never its value (ADR 0011).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
from enum import StrEnum
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url

from app.production import refusal


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class LogFormat(StrEnum):
    json = "json"
    text = "text"


class ConfigurationError(ValueError):
    """Settings that cannot be used; ``problems`` maps each setting's name to why, never to its
    value, so the message is safe to print and log."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(sorted(problems.items()))
        lines = "".join(f"\n  {env_name(name)}: {why}" for name, why in self.problems.items())
        super().__init__(f"invalid configuration ({len(self.problems)} setting(s)):{lines}")


def env_name(field_name: str) -> str:
    return f"VETIFY_{field_name.upper()}"


class _Refused:
    """What a source hands to validation for a setting it must refuse (a conflict, an unreadable
    file): validation turns it into an error, so it is reported with all the others."""

    def __init__(self, why: str):
        self.why = why


class SecretFilesSource(PydanticBaseSettingsSource):
    """``VETIFY_<NAME>_FILE``: the secret's value is the file's content, less one trailing
    newline (what ``echo`` and most secret stores write)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        # The key the other sources use: a field read under an alias is validated by it.
        names = _env_names(field, field_name)
        key = field_name if names == [env_name(field_name)] else names[0]
        path = environ.get(f"{env_name(field_name)}_FILE")
        if path is None:
            return None, key, False
        direct = [name for name in names if name in environ]
        if direct:
            why = f"set both {' and '.join(direct)} and {env_name(field_name)}_FILE"
            return _Refused(why), key, False
        try:
            content = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            # The path is not the secret; the OS error says what is wrong with it.
            return _Refused(f"cannot read {env_name(field_name)}_FILE ({exc})"), key, False
        return content.removesuffix("\n"), key, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if _is_secret(field):
                value, key, _ = self.get_field_value(field, name)
                if value is not None:
                    found[key] = value
        return found


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


def _env_names(field: FieldInfo, field_name: str) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    return [env_name(field_name)]


class StorageBackend(StrEnum):
    local = "local"
    s3 = "s3"


KEY_BYTES = 32
ANY_COUNTRY = "*"
"""In ``record_retention_years``: the minimum of a country not listed (or of a clinic that
named none)."""
RECORD_YEARS_MAX = 100
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
DEVELOPMENT_KEY_ID = "development"
DEVELOPMENT_KEYRING = (
    f"{DEVELOPMENT_KEY_ID}:"
    + base64.b64encode(hashlib.sha256(b"vetify: a development key, known to all").digest()).decode()
)
"""Outside production, with no ``VETIFY_ENCRYPTION_KEYS``: a key everyone can read (this
line), so that the embedded default runs without one. Production refuses it."""


def key_bytes(encoded: str) -> bytes:
    """A 32-byte key in base64 (standard or URL-safe); a ValueError naming no key otherwise."""
    standard = encoded.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"must be {KEY_BYTES} bytes (256 bits)")
    return key


def parse_keyring(text: str) -> dict[str, bytes]:
    """``id:key[,id:key...]``, each key 32 bytes in base64 (standard or URL-safe), in order;
    a ValueError (naming no key material) if it is not that."""
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        key_id, colon, encoded = item.partition(":")
        if not colon or not _KEY_ID.fullmatch(key_id):
            raise ValueError(
                f"key {n + 1}: write each key as id:base64 (an id of letters, digits, _ or -)"
            )
        if key_id in keys:
            raise ValueError(f"key {n + 1}: the id {key_id} is listed twice")
        try:
            keys[key_id] = key_bytes(encoded)
        except ValueError as refused:
            raise ValueError(f"key {key_id}: {refused}") from None
    return keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VETIFY_", extra="ignore", frozen=True, env_file=".env"
    )

    env: Environment = Environment.development
    """development, test or production; production refuses unsafe settings at start-up."""

    debug: bool = False
    """Tracebacks in error responses (Starlette's debug page). Never in production."""

    log_format: LogFormat | None = None
    """``json``: one JSON object a line on stdout, for a log collector; ``text``: readable
    ``key=value`` lines. Unset: json in production, text elsewhere (:attr:`logs_as`)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The least severe level written, for every logger (the service's and its libraries')."""

    database_url: Annotated[
        SecretStr | None,
        Field(validation_alias=AliasChoices("VETIFY_DATABASE_URL", "DATABASE_URL")),
    ] = None
    """URL of the service's own role (owns nothing, no BYPASSRLS). Unset, with no owner URL
    either: embedded PostgreSQL."""

    redis_url: Annotated[
        SecretStr | None,
        Field(validation_alias=AliasChoices("VETIFY_REDIS_URL", "REDIS_URL")),
    ] = None
    """Shared state across replicas (rate limits, cache, as they come). Unset: none used."""

    database_owner_url: SecretStr | None = None
    """URL of the role that owns the schema; used only to run migrations."""
    database_backup_url: SecretStr | None = None
    """URL of the backup role (reads every clinic's rows, writes none: ADR 0015), for the
    operators' commands that read across clinics (`vetify usage`); the service never uses it."""

    data_dir: Path = Path(".vetify")
    """Where the embedded PostgreSQL keeps its cluster when no database URL is set."""

    backup_dir: Path | None = None
    """The embedded database's backup repository (base backups and archived WAL, ADR 0039);
    unset: ``data_dir / "backups"``. Put it on another disk, or copy it off the machine."""
    backup_archive_timeout_seconds: int = Field(default=60, ge=10, le=3600)
    """A WAL segment with writes is archived at the latest this long after its first: the
    most a restore "to latest" loses (RPO)."""
    backup_retention_days: int = Field(default=30, ge=1, le=3650)
    """`vetify backup now` keeps what a restore to any time of this many days needs."""
    backup_s3_bucket: str | None = None
    """Where `vetify backup push` copies the repository off the machine (ADR 0042), encrypted
    before it leaves (``backup_encryption_key``); unset: no copy."""
    backup_s3_prefix: str = Field(default="vetify", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    backup_s3_endpoint_url: str | None = None
    """An S3-compatible service (MinIO, Ceph ...); unset: AWS itself."""
    backup_s3_region: str | None = None
    backup_s3_access_key_id: SecretStr | None = None
    backup_s3_secret_access_key: SecretStr | None = None
    """Credentials of their own (not the attachments' bucket's); unset: the environment's."""
    backup_s3_server_side_encryption: Literal["AES256", "aws:kms", "none"] = "AES256"
    """The store's own encryption at rest, on top of ours."""
    backup_encryption_key: SecretStr | None = Field(default=None, min_length=32)
    """The key (a passphrase of 32 characters or more) that encrypts the off-site copy; without
    it the copy cannot be read back. Keep it apart from the bucket's credentials."""

    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_statement_timeout_ms: int = Field(default=15_000, ge=100, le=3_600_000)
    """PostgreSQL cancels a statement after this; the client gives up on it a second later (a
    frozen or partitioned server cannot cancel anything)."""
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Opening a connection (TCP, TLS, authentication), and waiting for a pooled one when all
    are in use (then 503 database-busy)."""
    db_ping_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    """A pooled connection is checked (one round trip) before a request uses it; one that does
    not answer within this is dropped and a new one opened."""
    db_ping_after_idle_seconds: float = Field(default=0.0, ge=0, le=3600)
    """Check only a connection idle for longer than this (HikariCP's bypass window), saving a
    round trip per request on a busy service. Off (0) by default: a connection the server ended
    moments ago can still look open, and its request then answers 503 (ADR 0019)."""
    ready_timeout_seconds: float = Field(default=3.0, ge=0.5, le=60)
    """``/health/ready`` answers within this even when a dependency hangs: keep it under the
    load balancer's (or Kubernetes') probe timeout."""

    public_url: str = "http://127.0.0.1:8000"
    """Base URL of the links the service mails (invitations, address verification, password
    reset), and the origin trusted for cookie-authenticated writes. Unset, `vetify serve`
    uses its --host and --port."""

    session_cookie_secure: bool = True
    session_idle_timeout_minutes: int = Field(default=60, ge=1)
    session_absolute_timeout_hours: int = Field(default=12, ge=1)
    api_token_default_days: int = Field(default=90, ge=1, le=3650)
    invitation_valid_hours: int = Field(default=72, ge=1)

    # Account lifecycle (docs/adr/0013-account-lifecycle.md).
    email_verification_valid_hours: int = Field(default=72, ge=1, le=30 * 24)
    """How long the link that verifies an account's address works (from when it is mailed)."""
    password_reset_valid_seconds: int = Field(default=30 * 60, ge=1, le=24 * 60 * 60)
    """How long a password-reset link works (from when it is mailed); each works once."""
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8 * 1024, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=64)
    """argon2id's passes, memory (KiB) and lanes (argon2-cffi's defaults, RFC 9106's low-memory
    choice). A stored hash made with others is rehashed at its user's next log-in."""

    login_free_failures: int = Field(default=3, ge=1, le=10_000)
    """Failed log-ins per account before each further one blocks it for 1, 2, 4... s."""
    login_lockout_failures: int = Field(default=10, ge=2, le=10_000)
    """Failed log-ins per account that lock it for ``login_lockout_minutes``."""
    login_lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    credential_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    """Credentials each process keeps resolved (with their clinic's standing) while the
    database's auth epochs say nothing changed (ADR 0019); 0 resolves every request afresh."""
    step_up_minutes: int = Field(default=15, ge=1, le=24 * 60)
    """How long after a log-in that passed a second factor its session may change security
    settings (the clinic's MFA requirement, its administrators, log-in locks)."""

    password_hash_workers: int | None = Field(default=None, ge=1, le=256)
    """Passwords hashed at once (argon2id: a core and 64 MiB each); unset: one per core."""
    password_hash_queue: int | None = Field(default=None, ge=0, le=100_000)
    """Requests that may wait for a hashing slot; beyond that, 503 at once. Unset: 16 per
    worker."""
    password_hash_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    """The longest a request waits for a hashing slot before its 503."""

    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Comma-separated IPs/CIDRs of the proxies in front of the service (load balancer,
    ingress). Only a request arriving from one of them has its ``X-Forwarded-For`` (client IP)
    and ``X-Forwarded-Proto`` (HTTPS) believed."""
    cors_allow_origins: Annotated[list[str], NoDecode] = []
    """Comma-separated origins (``https://app.example.com``) whose browser scripts may call
    the API with credentials (CORS) and send cookie-authenticated writes (CSRF), besides the
    origin of ``public_url``. Empty: no cross-origin access."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body outside upload routes; a larger one is a 413."""
    max_json_depth: int = Field(default=32, ge=4, le=256)
    """Deepest nesting of arrays/objects a JSON body may have."""
    max_url_bytes: int = Field(default=8 * 1024, ge=1024)
    """Longest URL (path and query string); a longer one is a 414."""
    max_header_bytes: int = Field(default=16 * 1024, ge=4096)
    """Most bytes of request headers in all; more is a 431."""
    body_read_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """The whole request body must arrive within this of the request reaching the service;
    else a 408 and the connection is closed."""

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
    rate_limit_password_reset: str = "10/hour"  # noqa: S105 - a rate, not a secret
    """Per client IP: password-reset requests and completions."""
    rate_limit_password_reset_address: str = "3/hour"  # noqa: S105 - a rate, not a secret
    """Per email address: reset mails sent (beyond it a request is answered alike, unmailed)."""
    rate_limit_verification_mail: str = "5/hour"
    """Per user: verification mails asked for again."""
    rate_limit_password_change: str = "10/hour"  # noqa: S105 - a rate, not a secret
    """Per user: password changes (each checks the current password)."""
    rate_limit_scale: float = Field(default=1.0, gt=0, le=100_000)
    """Multiplies every quota above and the plans' API quotas: for load tests and test
    stages that send far more than a clinic does. Limits still apply; 1 in production."""

    appointment_horizon_days: int = Field(default=730, ge=1, le=36_500)
    """How far from now, before or after, an appointment may be booked or moved; further is a
    422 (a slip of the year, 1926 for 2026, is caught at once)."""

    upload_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    """Largest attachment accepted; enforced while the body streams in (413 beyond it)."""
    storage_backend: StorageBackend = StorageBackend.local
    attachments_dir: Path | None = None
    """Local storage root; unset: ``data_dir / "attachments"``."""
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    """An S3-compatible service (MinIO, Ceph ...); unset: AWS itself."""
    s3_region: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    """Unset: boto3's own chain (environment, instance role)."""
    s3_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Each wait on S3 (connecting, each read); a call is tried twice at most, so an S3 that
    stopped answering costs a request about twice this, then a 503."""
    clamd_address: str | None = Field(default=None, pattern=r"^[^:\s]+:[0-9]{1,5}$")
    """``host:port`` of a clamd to scan uploads with (INSTREAM); unset: no scanning."""
    clamd_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    retention_expired_days: int = Field(default=30, ge=1, le=3650)
    """How long sessions and tokens expired or revoked, account links used or expired, and
    invitations settled are kept before ``vetify retention --apply`` removes them."""
    clinic_deletion_days: int = Field(default=90, ge=30, le=3650)
    """How long after a clinic stopped being a customer (its subscription ended, or its trial
    with none begun) ``vetify retention --apply`` deletes its data: time for its owner to take
    it away (``POST /api/v1/clinics/current/export``) or to pay again (ADR 0037)."""
    record_retention_years: Annotated[dict[str, int], NoDecode] = {ANY_COUNTRY: 10}
    """The legal minimum, in years after a patient's last visit, that medical records are kept
    for, by country of the clinic (ISO 3166-1 alpha-2), ``*`` for any other:
    ``*=10,GB=6,DE=10``. A clinic keeps its records this long, or longer if it says so; then
    ``vetify retention --apply`` removes them (ADR 0035). The law is the operator's to read:
    these are not legal advice."""
    export_valid_hours: int = Field(default=72, ge=1, le=720)
    """How long a client's export (``POST /api/v1/customers/{id}/export``) may be downloaded
    once it is ready; then its file is deleted (ADR 0030)."""
    audit_retention_days: int = Field(default=2555, ge=365, le=36500)
    """How long the audit trail keeps an event (``vetify audit prune``, ADR 0027): 7 years by
    default, and never less than a year, longer than the data it describes."""
    audit_signing_key: SecretStr | None = None
    """The Ed25519 private key (32 bytes, base64: ``openssl rand -base64 32``) that
    ``vetify audit anchor`` signs each clinic's trail head with (ADR 0027). Only that
    command needs it: the service never holds it, so the service cannot forge an anchor."""
    audit_public_key: str | None = None
    """Its public half (32 bytes, base64), for ``vetify audit verify`` where the private key
    is not given (an auditor's machine); unset: derived from the private key, if set."""
    kms_key_id: str | None = Field(default=None, min_length=1, max_length=2048)
    """An AWS KMS key (id, ARN or alias) that wraps the data keys of field-level encryption
    (ADR 0028), instead of ``VETIFY_ENCRYPTION_KEYS``; that keyring, if set too, still unwraps
    what it wrapped (``vetify keys rotate-kek`` moves them over). Credentials: boto3's chain."""
    kms_region: str | None = None
    kms_endpoint_url: str | None = None
    """A KMS-compatible endpoint (LocalStack ...); unset: AWS itself."""
    encryption_keys: SecretStr | None = None
    """The key-encryption keys that wrap each clinic's data keys (ADR 0028): ``id:key`` with a
    32-byte key in base64 (``openssl rand -base64 32``), several separated by commas while
    rotating; the first wraps, all unwrap. Required in production unless a KMS key wraps;
    elsewhere unset means a development key written in the code, which production refuses."""

    workers: int = Field(default=1, ge=1, le=64)
    """Processes `vetify serve` runs (or ``--workers``), forked after start-up and serving one
    socket (app/kit/supervisor.py). Each has its own database pool (``VETIFY_DB_POOL_SIZE``
    plus overflow, so the database sees that many times this). More than one needs
    ``VETIFY_REDIS_URL``: rate limits and log-in lockouts are counted there, shared; in each
    process's memory they would count alone, one allowance per process."""

    jobs_in_process: bool = False
    """Run the job worker inside the API process: what `vetify serve` does on the embedded
    database. Deployments run `vetify worker` processes apart (they scale on their own)."""

    shutdown_timeout_seconds: float = Field(default=20.0, ge=1, le=3600)
    """From SIGTERM (or SIGINT) to exit, at most. Requests in flight get 40% of it, the job
    worker 40% (its running jobs the first half of that; then they are abandoned and retried),
    the rest closes connections. Past it the process exits anyway (code 1). Below Kubernetes'
    terminationGracePeriodSeconds (30 by default)."""

    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve Prometheus' ``/metrics`` on this port, apart from the API (`vetify serve` and
    `vetify worker` each start it; under ``--workers N`` the supervisor serves the sum of its
    workers). Unset: no separate listener. ADR 0023, docs/operations.md."""
    metrics_host: str = "127.0.0.1"
    """Where the metrics listener binds: loopback by default, for a scraper on the same host
    or in the same pod; what it shows is not for the public."""
    metrics_token: SecretStr | None = None
    """Serve ``/metrics`` on the API's own port too, to a scraper sending ``Authorization:
    Bearer <token>``. Unset (and no metrics port): there is no ``/metrics`` route at all."""
    usage_flush_seconds: float = Field(default=60.0, ge=1, le=3600)
    """How often each process adds the requests and jobs it counted per clinic to the
    ``clinic_usage`` table (and once more as it stops); a crash loses at most this long of one
    process's counts. ADR 0026, `vetify usage`."""

    smtp_host: str | None = None
    """The mail relay for notices to clinics (trial ending...); unset: notices are only logged."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    """Upgrade the connection with STARTTLS (port 587); false only for a relay on localhost."""
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = Field(default="Vetify <no-reply@vetify.dev>", max_length=200)
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    stripe_api_key: SecretStr | None = None
    """Stripe secret key (``sk_...``); unset: checkout and portal answer 503 (development)."""
    stripe_webhook_secret: SecretStr | None = None
    """Webhook endpoint signing secret(s) (``whsec_...``), comma-separated: several are active
    while Stripe rolls a secret; unset: every delivery is refused."""
    stripe_api_base: str = Field(default="https://api.stripe.com", pattern=r"^https?://[^\s/]+$")
    """Where the Stripe SDK sends requests; tests point it at a local fake."""
    stripe_timeout_seconds: float = Field(default=10.0, gt=0, le=80)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=5)
    stripe_price_starter: str | None = None
    stripe_price_professional: str | None = None
    stripe_price_enterprise: str | None = None
    """Stripe price ids of the plans (``price_...``); a plan without one cannot be bought."""
    billing_trial_days: int = Field(default=14, ge=0, le=365)
    billing_grace_days: int = Field(default=7, ge=0, le=60)
    """How long a past-due clinic keeps writing before it turns read-only."""

    # Error tracking and dependency health (docs/adr/0024-errors-and-dependency-health.md).
    sentry_dsn: SecretStr | None = None
    """Where errors are reported (Sentry, or a compatible server such as GlitchTip); unset:
    nothing is sent anywhere."""
    sentry_environment: str | None = Field(default=None, max_length=64)
    """The environment errors are filed under; unset: ``VETIFY_ENV``."""
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of requests sent to Sentry as performance traces (0: errors only)."""
    git_sha: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{7,40}$")
    """The commit deployed, set by the image build; part of the release errors name."""
    operator_token: SecretStr | None = None
    """Bearer token of the operators' ``/health/dependencies``; unset: that route is a 404."""
    stripe_probe_cache_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How long ``/health/dependencies`` reuses its last answer from Stripe (its API is
    rate-limited and a probe per scrape would be wasteful)."""

    @property
    def keyring(self) -> dict[str, bytes]:
        """The key-encryption keys by id, the one that wraps first (ADR 0028)."""
        if self.encryption_keys is None:
            return parse_keyring(DEVELOPMENT_KEYRING)
        return parse_keyring(self.encryption_keys.get_secret_value())

    @property
    def logs_as(self) -> LogFormat:
        if self.log_format is not None:
            return self.log_format
        return LogFormat.json if self.env is Environment.production else LogFormat.text

    @field_validator("record_retention_years", mode="before")
    @classmethod
    def _years_by_country(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("give COUNTRY=YEARS pairs, comma-separated: *=10,GB=6")
            return {country.strip().upper(): years.strip() for country, years in pairs}
        return value

    @field_validator("record_retention_years")
    @classmethod
    def _minimums(cls, value: dict[str, int]) -> dict[str, int]:
        if ANY_COUNTRY not in value:
            raise ValueError(f"give the years for any other country too ({ANY_COUNTRY}=10)")
        for country, years in value.items():
            if country != ANY_COUNTRY and not re.fullmatch(r"[A-Z]{2}", country):
                raise ValueError(f"{country!r} is not a country code like GB")
            if not 1 <= years <= RECORD_YEARS_MAX:
                raise ValueError(f"{country}: {years} years is not between 1 and 100")
        return value

    def record_minimum_years(self, country: str | None) -> int:
        """The years a clinic of ``country`` must keep medical records for."""
        table = self.record_retention_years
        return table.get(country or ANY_COUNTRY, table[ANY_COUNTRY])

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

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
        # A typo here would silently refuse (or never match) a front end's requests; "*" would
        # let every site call the API with the user's cookies.
        for origin in value:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
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
        "rate_limit_password_reset",
        "rate_limit_password_reset_address",
        "rate_limit_verification_mail",
        "rate_limit_password_change",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        parse(value)  # raises ValueError on a malformed limit
        return value

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # str(ValidationError) shows each input_value: secrets included. Never let it out.
            raise ConfigurationError(_problems(exc)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, SecretFilesSource(settings_cls), env_settings]
        # A stray .env must not quietly configure a deployment, nor the tests.
        if os.environ.get("VETIFY_ENV", "").strip().lower() not in ("production", "test"):
            sources.append(dotenv_settings)
        return tuple(sources)

    @field_validator("*", mode="before")
    @classmethod
    def _refused_by_a_source(cls, value: Any) -> Any:
        if isinstance(value, _Refused):
            raise ValueError(value.why)
        return value

    @field_validator("database_owner_url")
    @classmethod
    def _roles_are_distinct(cls, owner: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        app = info.data.get("database_url")
        if owner is not None and app is not None:
            owner_user = make_url(owner.get_secret_value()).username
            if make_url(app.get_secret_value()).username == owner_user:
                raise ValueError(
                    "must use a role other than VETIFY_DATABASE_URL's: row-level security "
                    "does not bind the schema owner"
                )
        return owner

    @field_validator("audit_signing_key", "audit_public_key")
    @classmethod
    def _a_32_byte_key(cls, value: SecretStr | str | None) -> SecretStr | str | None:
        if value is not None:
            key_bytes(value.get_secret_value() if isinstance(value, SecretStr) else value)
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _a_keyring(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # kms_key_id is declared (so validated) before.
        production = info.data.get("env") is Environment.production
        if value is None:
            if production and info.data.get("kms_key_id") is None:
                raise ValueError(
                    "required in production (or VETIFY_KMS_KEY_ID): it wraps the keys the"
                    " clinics' data is encrypted with"
                )
            return value
        keyring = parse_keyring(value.get_secret_value())  # its ValueError names no key
        if (
            production
            and parse_keyring(DEVELOPMENT_KEYRING)[DEVELOPMENT_KEY_ID] in keyring.values()
        ):
            raise ValueError("holds the development key, which is written in the code")
        return value

    @field_validator("*")
    @classmethod
    def _production_rules(cls, value: Any, info: ValidationInfo) -> Any:
        # Fields are validated in declaration order, so ``env`` (the first) is known here.
        if info.data.get("env") is Environment.production and info.field_name is not None:
            why = refusal(info.field_name, value, cls.model_fields[info.field_name])
            if why:
                raise ValueError(why)
        return value

    @field_validator("workers")
    @classmethod
    def _workers_share_their_counts(cls, value: int, info: ValidationInfo) -> int:
        # redis_url is declared (so validated) before workers.
        if value > 1 and info.data.get("redis_url") is None:
            raise ValueError(
                "above 1 needs VETIFY_REDIS_URL: the workers share rate limits and log-in"
                " lockouts through Redis (in memory each would count alone)"
            )
        return value

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> Settings:
        if self.storage_backend is StorageBackend.s3 and not self.s3_bucket:
            raise ValueError("VETIFY_STORAGE_BACKEND=s3 needs VETIFY_S3_BUCKET")
        if self.backup_s3_bucket and self.backup_encryption_key is None:
            raise ValueError(
                "VETIFY_BACKUP_S3_BUCKET needs VETIFY_BACKUP_ENCRYPTION_KEY: the off-site copy"
                " is encrypted before it leaves the machine"
            )
        return self

    @property
    def appointment_horizon(self) -> dt.timedelta:
        return dt.timedelta(days=self.appointment_horizon_days)

    @property
    def attachments_root(self) -> Path:
        return self.attachments_dir or self.data_dir / "attachments"

    @property
    def backups_root(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def stripe_webhook_secrets(self) -> list[str]:
        if self.stripe_webhook_secret is None:
            return []
        value = self.stripe_webhook_secret.get_secret_value()
        return [part.strip() for part in value.split(",") if part.strip()]

    @property
    def embedded(self) -> bool:
        """No database configured: `vetify` starts its own in ``data_dir``. Either URL set
        means an external database, and no embedded one is ever started."""
        return self.database_url is None and self.database_owner_url is None


def _problems(exc: ValidationError) -> dict[str, str]:
    problems: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"]
        name = _field_of(str(loc[0])) if loc else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems[name] = f"{problems[name]}; {message}" if name in problems else message
    return problems


def _field_of(key: str) -> str:
    """The field an error's location names (an alias such as DATABASE_URL, or the field)."""
    for name, field in Settings.model_fields.items():
        if key == name or key.upper() in _env_names(field, name):
            return name
    return key
