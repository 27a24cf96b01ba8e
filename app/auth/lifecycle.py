"""An account's lifecycle: verifying its address, resetting and changing its password.

The links are single-use secrets made and mailed by jobs (``app/auth/jobs.py``); only their
SHA-256 is stored. A link works once, until it expires, for the address it was mailed to.
Who owns an address, and what an unverified account is worth, is ADR 0013: the mailbox
decides. Each event is written to the ``vetify.security`` log.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import mfa, service
from app.auth.lockout import LoginGuard
from app.auth.mails import MAIL_PASSWORD_RESET, verify_address
from app.auth.models import AccountToken, CredentialKind, Membership, TokenPurpose, User
from app.auth.principal import Principal
from app.kit import crypto, passwords
from app.kit.clock import utcnow
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from app.kit.ratelimit import Limiter, Policy
from app.queue import enqueue
from app.settings import Settings

PREFIXES = {
    TokenPurpose.verify_email: "vtv",
    TokenPurpose.reset_password: "vtr",  # pragma: allowlist secret - a prefix
}
_INVALID_LINK = "The link is not valid, has expired or was already used."


# -- links ---------------------------------------------------------------------------------------
async def new_link(
    session: AsyncSession, settings: Settings, user: User, purpose: TokenPurpose
) -> str:
    """A new single-use secret for ``user``'s current address (its hash stored): what a job
    mails, once."""
    secret = f"{PREFIXES[purpose]}_{secrets.token_urlsafe(crypto.SECRET_BYTES)}"
    lifetime = (
        dt.timedelta(hours=settings.email_verification_valid_hours)
        if purpose is TokenPurpose.verify_email
        else dt.timedelta(seconds=settings.password_reset_valid_seconds)
    )
    session.add(
        AccountToken(
            user_id=user.id,
            purpose=purpose,
            email=user.email,
            secret_hash=crypto.hash_secret(secret),
            expires_at=utcnow() + lifetime,
        )
    )
    await session.flush()
    return secret


async def _use_link(
    session: AsyncSession, purpose: TokenPurpose, secret: str, user_id: uuid.UUID | None = None
) -> User:
    """The active user the link is for, the link spent; :class:`NotFound` if it is unknown,
    spent, expired, for another purpose or user, or for an address the user no longer has.

    One conditional UPDATE spends it: two requests racing with one link cannot both win."""
    conditions = [
        AccountToken.secret_hash == crypto.hash_secret(secret),
        AccountToken.purpose == purpose,
        AccountToken.used_at.is_(None),
        AccountToken.expires_at > utcnow(),
    ]
    if user_id is not None:
        conditions.append(AccountToken.user_id == user_id)
    used = (
        await session.execute(
            update(AccountToken)
            .where(*conditions)
            .values(used_at=utcnow())
            .returning(AccountToken.user_id, AccountToken.email)
        )
    ).one_or_none()
    user = await session.get(User, used.user_id) if used is not None else None
    if used is None or user is None or not user.active or used.email.lower() != user.email.lower():
        raise NotFound(_INVALID_LINK)
    return user


async def _void_reset_links(session: AsyncSession, user_id: uuid.UUID) -> None:
    """A password just set makes every reset link mailed before it useless."""
    await session.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user_id,
            AccountToken.purpose == TokenPurpose.reset_password,
            AccountToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )


# -- verifying the address -----------------------------------------------------------------------
async def verify_email(session: AsyncSession, caller: Principal, secret: str) -> User:
    """The caller proves the address: the link (the mailbox) and their own log-in (the
    password) together, so nobody verifies an account someone else registered with it."""
    user = await _use_link(session, TokenPurpose.verify_email, secret, caller.user_id)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        security_event(SecurityEvent.email_verified, outcome="by_link")  # the caller: the user
    return user


async def resend_verification(session: AsyncSession, caller: Principal) -> None:
    user = await session.get_one(User, caller.user_id)
    if user.email_verified_at is not None:
        raise Conflict("Your address is already verified.")
    await verify_address(session, user)


# -- resetting a forgotten password --------------------------------------------------------------


async def request_password_reset(
    session: AsyncSession, limiter: Limiter, per_address: Policy, email: str
) -> None:
    """Mail a reset link if an active account has ``email``. The caller is answered alike
    whatever happens here: no account, over the address's limit, or mailed."""
    # Counted for every address, known or not, so the limit says nothing about accounts.
    if not (await limiter.hit(per_address, crypto.address_key(email))).allowed:
        security_event(SecurityEvent.rate_limited, outcome="not_mailed", policy=per_address.name)
        return
    user = (
        await session.scalars(select(User).where(func.lower(User.email) == email.lower()))
    ).one_or_none()
    if user is None or not user.active:
        security_event(SecurityEvent.password_reset_requested, outcome="no_active_account")
        return
    await enqueue(session, MAIL_PASSWORD_RESET, user_id=str(user.id))
    security_event(SecurityEvent.password_reset_requested, outcome="mailed", user_id=user.id)


async def reset_password(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    guard: LoginGuard,
    secret: str,
    password: str,
) -> User:
    """Set the password of the link's user, end every session and API token they have in
    every clinic, lift their log-in lock.

    The link reached the address, so it also verifies it. An account that was not verified
    yet may have been registered by someone else (ADR 0013): their password stops working
    here, their sessions and tokens end, and the authenticator they may have enrolled goes,
    so that the address's owner is never shut out by it."""
    user = await _use_link(session, TokenPurpose.reset_password, secret)
    user.password_hash = await passwords.hash(password)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
        user.totp_secret_sealed = None
        user.totp_enabled_at = None
        user.totp_last_step = None
        user.recovery_codes = []
        security_event(SecurityEvent.email_verified, outcome="by_reset", user_id=user.id)
    await _void_reset_links(session, user.id)
    await session.flush()
    await service.revoke_all_credentials(session, sessions, user.id)
    await guard.unlock(user.email)
    security_event(SecurityEvent.password_reset, outcome="succeeded", user_id=user.id)
    return user


# -- changing the password -----------------------------------------------------------------------
def _refused(field: str, detail: str) -> InvalidInput:
    return InvalidInput(detail, [FieldError(loc=["body", field], msg=detail, type="refused")])


async def change_password(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
    *,
    current: str,
    new: str,
    totp_code: str | None,
) -> service.Issued:
    """Set a new password, proven with the current one (and the second factor, for a user
    who has one, as at log-in); every session and token of the user ends, in every clinic,
    and the caller gets a new session in this one."""
    if caller.credential_kind is not CredentialKind.session:
        # A script's token must not be able to take its person's account.
        raise Forbidden("Change your password from a login session.")
    user = await session.get_one(User, caller.user_id)
    if not await passwords.verify(user.password_hash, current):
        raise _refused("current_password", "The current password is wrong.")
    if user.mfa_enabled:
        if not totp_code:
            raise _refused("totp_code", "Send totp_code: a code from your authenticator.")
        if not await mfa.accept_second_factor(session, user, totp_code):
            raise _refused("totp_code", "The code is not valid or was already used.")
    user.password_hash = await passwords.hash(new)
    await _void_reset_links(session, user.id)
    await session.flush()
    await service.revoke_all_credentials(session, sessions, user.id)
    membership = (
        await session.scalars(select(Membership).where(Membership.user_id == caller.user_id))
    ).one()
    issued = await service.issue(session, settings, membership, CredentialKind.session)
    security_event(SecurityEvent.password_changed, outcome="succeeded")  # the caller: the user
    return issued
