"""Enrolling in, and leaving, multi-factor authentication; recovery codes.

Turning a second factor on or off changes what the user's sessions prove, so both end every
login session the user has, in every clinic, and give the caller a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import mfa, service
from app.auth.models import CredentialKind, Membership, User
from app.auth.principal import Principal
from app.auth.service import Issued
from app.kit.clock import utcnow
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import Conflict, FieldError, Forbidden, InvalidInput
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Started:
    secret: str
    uri: str


def _bad_code(detail: str) -> InvalidInput:
    security_event(SecurityEvent.mfa_failed, outcome="refused")
    return InvalidInput(detail, [FieldError(loc=["body", "code"], msg=detail, type="invalid_code")])


def _sessions_only(caller: Principal) -> None:
    if caller.credential_kind is not CredentialKind.session:
        raise Forbidden("Multi-factor settings change only from a login session.")


async def _user(session: AsyncSession, caller: Principal) -> User:
    return await session.get_one(User, caller.user_id)


async def start(session: AsyncSession, caller: Principal) -> Started:
    """A new secret, pending until confirmed; starting again replaces a pending one."""
    _sessions_only(caller)
    user = await _user(session, caller)
    if user.mfa_enabled:
        raise Conflict("Multi-factor authentication is already on; turn it off first.")
    secret = mfa.new_secret()
    user.totp_secret_sealed = await mfa.seal_secret(session, user.id, secret)
    user.totp_last_step = None
    await session.flush()
    return Started(secret, mfa.provisioning_uri(secret, user.email))


async def confirm(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
    code: str,
) -> tuple[list[str], Issued]:
    """Turn the pending secret on with a code from it; the recovery codes, shown once."""
    _sessions_only(caller)
    user = await _user(session, caller)
    if user.mfa_enabled:
        raise Conflict("Multi-factor authentication is already on.")
    if user.totp_secret_sealed is None:
        raise Conflict("Start enrolment first (POST /api/v1/auth/mfa/totp).")
    if not await mfa.accept_totp(session, user, code):
        raise _bad_code("The code does not match the new secret (or was already used).")
    user.totp_enabled_at = utcnow()
    codes = mfa.new_recovery_codes()
    user.recovery_codes = [mfa.hash_recovery_code(c) for c in codes]
    security_event(SecurityEvent.mfa_enrolled, outcome="enabled")
    return codes, await _rotate(session, sessions, settings, caller)


async def disable(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
    code: str,
) -> Issued:
    """Turn multi-factor off, proven with a current code or a recovery code."""
    _sessions_only(caller)
    user = await _user(session, caller)
    if not user.mfa_enabled:
        raise Conflict("Multi-factor authentication is not on.")
    if not await mfa.accept_second_factor(session, user, code):
        raise _bad_code("The code is not valid or was already used.")
    user.totp_secret_sealed = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_codes = []
    security_event(SecurityEvent.mfa_disabled, outcome="disabled")
    return await _rotate(session, sessions, settings, caller)


async def regenerate_codes(session: AsyncSession, caller: Principal, code: str) -> list[str]:
    """New recovery codes for a current TOTP code; the old ones stop working."""
    _sessions_only(caller)
    user = await _user(session, caller)
    if not user.mfa_enabled:
        raise Conflict("Multi-factor authentication is not on.")
    if not await mfa.accept_totp(session, user, code):
        raise _bad_code("The code is not valid or was already used.")
    codes = mfa.new_recovery_codes()
    user.recovery_codes = [mfa.hash_recovery_code(c) for c in codes]
    await session.flush()
    return codes


async def _rotate(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
) -> Issued:
    await session.flush()
    await service.end_sessions_everywhere(session, sessions, caller)
    membership = (
        await session.scalars(select(Membership).where(Membership.user_id == caller.user_id))
    ).one()
    return await service.issue(session, settings, membership, CredentialKind.session)
