from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Entity, TenantScoped, pg_enum


class Role(StrEnum):
    owner = "owner"
    admin = "admin"
    vet = "vet"
    technician = "technician"
    receptionist = "receptionist"
    read_only = "read_only"


class CredentialKind(StrEnum):
    session = "session"
    api_token = "api_token"  # noqa: S105 - a kind, not a secret  # nosec B105


class User(Entity, Base):
    """A person who can log in. Global: one user may work for several clinics."""

    __tablename__ = "users"
    __table_args__ = (Index("uq_users_email_lower", text("lower(email)"), unique=True),)

    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    # When the person proved the address is theirs (a mailed link); until then the account
    # may not invite or pay, and its password yields to a reset (ADR 0013).
    email_verified_at: Mapped[dt.datetime | None]
    # Multi-factor (ADR 0009). The TOTP secret is set at enrolment and counts only once
    # confirmed (totp_enabled_at); totp_last_step is the last time step accepted, so a code
    # is never accepted twice. Recovery codes are stored as SHA-256 hashes, each removed
    # when used. The secret is sealed with the platform's data key (ADR 0028: app.auth.mfa).
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[dt.datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    recovery_codes: Mapped[list[bytes]] = mapped_column(
        ARRAY(LargeBinary(32)), default=list, server_default=text("'{}'")
    )
    # Moved by the database when the account is disabled, its password or its second factor
    # changes (migration 0008).
    auth_epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")

    @property
    def mfa_enabled(self) -> bool:
        return self.totp_enabled_at is not None


class Membership(TenantScoped, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[Role] = mapped_column(pg_enum(Role, "staff_role"))
    active: Mapped[bool] = mapped_column(default=True)


class Credential(TenantScoped, Base):
    """A login session (cookie) or an API token (bearer), each acting in one clinic.

    Only the SHA-256 of the secret is stored.
    """

    __tablename__ = "credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[CredentialKind] = mapped_column(pg_enum(CredentialKind, "credential_kind"))
    name: Mapped[str | None] = mapped_column(String(100))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[dt.datetime]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class TokenPurpose(StrEnum):
    verify_email = "verify_email"
    # pragma: allowlist nextline secret - a purpose, not a secret
    reset_password = "reset_password"  # noqa: S105  # nosec B105


class AccountToken(Entity, Base):
    """A mailed single-use link's secret, for one user and one purpose; only its SHA-256 is
    stored. Global like its user: it is used before anyone has picked a clinic."""

    __tablename__ = "account_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[TokenPurpose] = mapped_column(pg_enum(TokenPurpose, "account_token_purpose"))
    email: Mapped[str] = mapped_column(String(254))
    """The address it was mailed to: it proves that address, and no later one."""
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class Invitation(TenantScoped, Base):
    __tablename__ = "invitations"

    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[Role] = mapped_column(pg_enum(Role, "staff_role"))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    invited_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[dt.datetime]
    accepted_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
