"""Accounts: users, login, sessions and API tokens, invitations; resolving the caller.

A clinic is opened by ``app.clinics.service.open_clinic``; this module gives it its owner."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import mails, mfa
from app.auth.lockout import LoginGuard
from app.auth.models import Credential, CredentialKind, Invitation, Membership, Role, User
from app.auth.permissions import ADMINISTRATIVE
from app.auth.principal import Principal
from app.clinics.models import Clinic
from app.db.repository import find, get_or_404, of_clinic
from app.db.tenancy import InClinic, Tenant, enter_tenant, enter_user, in_clinic
from app.kit import crypto, passwords
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.problems import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    MfaRequired,
    NotFound,
    Unauthenticated,
)
from app.queue import enqueue
from app.settings import Settings

SESSION_COOKIE = "vetify_session"
SESSION_PREFIX = "vts"
TOKEN_PREFIX = "vtk"  # noqa: S105 - a prefix, not a secret  # nosec B105
INVITATION_PREFIX = "vti"
_WRONG = "The email or the password is wrong."
"""Every failed log-in's answer: none tells a right password from a wrong one."""
# Touching last_used_at on every request would turn every read into a write.
_TOUCH_EVERY = dt.timedelta(minutes=1)


def _by_email(email: str) -> ColumnElement[bool]:
    return func.lower(User.email) == email.lower()


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.scalars(select(User).where(_by_email(email)))).one_or_none()


async def _password_right(stored: str | None, active: bool, password: str) -> bool:
    # Hashes even for an unknown email (stored None), so both cost the same.
    return await passwords.verify(stored, password) and active


async def _rehash_if_needed(user: User, password: str) -> None:
    if crypto.password_needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash(password)


async def _check_password(session: AsyncSession, email: str, password: str) -> User:
    user = await _user_by_email(session, email)
    right = await _password_right(
        user.password_hash if user else None, bool(user and user.active), password
    )
    if user is None or not right:
        raise InvalidCredentials(_WRONG)
    await _rehash_if_needed(user, password)
    return user


async def _check_password_unpooled(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], email: str, password: str
) -> User:
    """:func:`_check_password` without holding ``session``'s connection through the hash.

    The stored hash is read in a transaction of its own that ends before the hash is checked:
    a flood of log-ins waits for a core with no pooled connection in hand, so it cannot drain
    the pool that every other request needs."""
    async with sessions() as short:
        found = (
            await short.execute(select(User.password_hash, User.active).where(_by_email(email)))
        ).one_or_none()
    right = await _password_right(
        found.password_hash if found else None, bool(found and found.active), password
    )
    user = await _user_by_email(session, email) if right else None
    # (Also refused: a password changed, or an account disabled, while it was being checked.)
    if (
        user is None
        or found is None
        or user.password_hash != found.password_hash
        or not user.active
    ):
        raise InvalidCredentials(_WRONG)
    await _rehash_if_needed(user, password)
    return user


async def _second_factor(session: AsyncSession, user: User, totp_code: str | None) -> None:
    """After the right password: an account with multi-factor on needs a valid code too."""
    if not user.mfa_enabled:
        return
    if not totp_code:
        raise MfaRequired("Send totp_code: a code from your authenticator or a recovery code.")
    if not await mfa.accept_second_factor(session, user, totp_code):
        raise MfaRequired("The code is not valid or was already used.")


async def _prove_account(
    session: AsyncSession, guard: LoginGuard, email: str, password: str, totp_code: str | None
) -> User:
    """An existing account, proven wherever its password is given as at log-in: the password,
    then its second factor, every failure spending the account's back-off (ADR 0014)."""
    async with guard.attempt(email):
        user = await _check_password(session, email, password)
        await _second_factor(session, user, totp_code)
    return user


# -- the owner of a new clinic -----------------------------------------------------------------
async def owner_for_new_clinic(
    session: AsyncSession,
    guard: LoginGuard,
    email: str,
    name: str,
    password: str,
    totp_code: str | None = None,
) -> User:
    """The user who opens a clinic: a new one, or an existing user who proves their account
    (password and second factor, as at log-in)."""
    if await _user_by_email(session, email) is not None:
        return await _prove_account(session, guard, email, password, totp_code)
    return User(id=new_id(), email=email, name=name, password_hash=await passwords.hash(password))


# -- login, sessions, tokens -------------------------------------------------------------------
async def my_memberships(session: AsyncSession, user_id: uuid.UUID) -> list[Membership]:
    """The user's memberships in every clinic (admitted by RLS through ``app.user_id``)."""
    await enter_user(session, user_id)
    result = await session.scalars(
        select(Membership)
        .where(Membership.user_id == user_id, Membership.active)
        .order_by(Membership.id)
        .execution_options(vetify_user_scope=True)
    )
    return list(result.all())


async def active_clinics(
    sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> set[uuid.UUID]:
    """Every clinic the user's account opens (an active membership), whichever clinic asks.

    Read in a transaction of its own: naming the user lets it see their memberships in every
    clinic (the ``member_self`` policy), which the asking request's transaction must not keep.
    """
    async with sessions() as session, session.begin():
        return {membership.tenant_id for membership in await my_memberships(session, user_id)}


async def _choose_clinic(
    session: AsyncSession, user_id: uuid.UUID, clinic_id: uuid.UUID | None
) -> Membership:
    memberships = await my_memberships(session, user_id)
    if clinic_id is not None:
        for membership in memberships:
            if membership.tenant_id == clinic_id:
                return membership
        raise NotFound("You are not a member of that clinic.")
    if len(memberships) == 1:
        return memberships[0]
    if not memberships:
        raise InvalidCredentials(_WRONG)
    choices = await session.scalars(
        select(Clinic).where(Clinic.id.in_([m.tenant_id for m in memberships])).order_by(Clinic.id)
    )
    listed = ", ".join(f"{c.id} ({c.name})" for c in choices)
    raise Conflict(f"You work for several clinics; log in again with clinic_id, one of: {listed}")


@dataclass(frozen=True, slots=True)
class Issued:
    """A new credential: the secret (shown once), its row, and who it authenticates."""

    secret: str
    credential: Credential
    principal: Principal


async def issue(
    session: AsyncSession,
    settings: Settings,
    membership: Membership,
    kind: CredentialKind,
    *,
    name: str | None = None,
    lifetime: dt.timedelta | None = None,
    logged_in_at: dt.datetime | None = None,
) -> Issued:
    """A new credential. ``logged_in_at``: a session that continues an earlier log-in (a clinic
    switch) keeps that log-in's time as its creation time, which step-up reads."""
    await enter_tenant(session, membership.tenant_id)
    prefix = SESSION_PREFIX if kind is CredentialKind.session else TOKEN_PREFIX
    secret, secret_hash = crypto.new_credential(prefix, membership.tenant_id)
    if lifetime is None:
        lifetime = dt.timedelta(hours=settings.session_absolute_timeout_hours)
    now = utcnow()
    credential = Credential(
        user_id=membership.user_id,
        kind=kind,
        name=name,
        secret_hash=secret_hash,
        created_at=logged_in_at or now,
        expires_at=now + lifetime,
        last_used_at=now,
    )
    session.add(credential)
    await session.flush()
    user = await session.get_one(User, membership.user_id)
    clinic = await _clinic(session, membership.tenant_id)
    principal = Principal(
        user_id=membership.user_id,
        clinic_id=membership.tenant_id,
        role=membership.role,
        credential_id=credential.id,
        credential_kind=kind,
        mfa_pending=clinic.require_mfa and not user.mfa_enabled,
        stepped_up=_stepped_up(settings, kind, user.mfa_enabled, credential.created_at, now),
    )
    return Issued(secret, credential, principal)


def _stepped_up(
    settings: Settings,
    kind: CredentialKind,
    mfa_enabled: bool,
    logged_in_at: dt.datetime,
    now: dt.datetime,
) -> bool:
    """A session logged in within ``step_up_minutes`` by a user with a second factor: every
    such log-in passed it (enrolling ends the sessions made before, ADR 0009)."""
    return (
        kind is CredentialKind.session
        and mfa_enabled
        and now - logged_in_at <= dt.timedelta(minutes=settings.step_up_minutes)
    )


async def owner_emails(session: AsyncSession) -> list[str]:
    """The addresses of the session's clinic's active owners: notices about the clinic itself."""
    result = await session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.role == Role.owner, Membership.active, User.active)
        .order_by(User.email)
    )
    return list(result.all())


async def login(
    session: AsyncSession,
    settings: Settings,
    email: str,
    password: str,
    clinic_id: uuid.UUID | None,
    totp_code: str | None = None,
    presented_session: str | None = None,
    *,
    sessions: async_sessionmaker[AsyncSession],
) -> Issued:
    """A new session, always: a session cookie the client already had is revoked, never
    reused or extended (session fixation)."""
    user = await _check_password_unpooled(session, sessions, email, password)
    # Only after the password was right, and before anything about the user's clinics is said.
    await _second_factor(session, user, totp_code)
    try:
        membership = await _choose_clinic(session, user.id, clinic_id)
    except NotFound:
        # Not "not a member": that would say the password was right.
        raise InvalidCredentials(_WRONG) from None
    issued = await issue(session, settings, membership, CredentialKind.session)
    if presented_session:
        await _retire(session, sessions, presented_session)
    return issued


async def _retire(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], secret: str
) -> None:
    clinic_id = crypto.parse_credential(SESSION_PREFIX, secret)
    if clinic_id is None:
        return
    async with in_clinic(session, sessions, clinic_id) as there:
        await there.execute(
            update(Credential)
            .where(
                Credential.secret_hash == crypto.hash_secret(secret),
                Credential.kind == CredentialKind.session,
                Credential.revoked_at.is_(None),
            )
            .values(revoked_at=utcnow())
        )


@dataclass(frozen=True, slots=True)
class Switched:
    """A session in another clinic: made and read in that clinic's own transaction."""

    issued: Issued
    user: User
    clinic: Clinic


async def switch_clinic(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
    clinic_id: uuid.UUID,
) -> Switched:
    if caller.credential_kind is not CredentialKind.session:
        raise Forbidden("An API token acts in one clinic; create a token in the other clinic.")
    membership = await _choose_clinic(session, caller.user_id, clinic_id)
    # The new session continues this log-in: switching must not make an old log-in recent.
    current = await revoke(session, caller, caller.credential_id)
    async with in_clinic(session, sessions, membership.tenant_id) as there:
        issued = await issue(
            there, settings, membership, CredentialKind.session, logged_in_at=current.created_at
        )
        user, clinic = await current_user_and_clinic(there, issued.principal)
    return Switched(issued, user, clinic)


def credential_clinic(secret: str, kind: CredentialKind) -> uuid.UUID:
    """The clinic a session cookie or bearer token names; a secret not of ours is a 401."""
    prefix = SESSION_PREFIX if kind is CredentialKind.session else TOKEN_PREFIX
    clinic_id = crypto.parse_credential(prefix, secret)
    if clinic_id is None:
        raise Unauthenticated("The credential is not valid.")
    return clinic_id


@dataclass(frozen=True, slots=True)
class Resolved:
    """What the database says of a credential and its caller, as of ``user_epoch`` (the user's
    auth epoch) and the clinic's epoch it was read under: all :func:`admit` needs to decide,
    with the time, so a cache may keep it while neither epoch moves (``app.auth.deps``)."""

    credential_id: uuid.UUID
    user_id: uuid.UUID
    clinic_id: uuid.UUID
    kind: CredentialKind
    role: Role
    revoked: bool
    expires_at: dt.datetime
    created_at: dt.datetime
    last_used_at: dt.datetime
    require_mfa: bool
    mfa_enabled: bool
    user_epoch: int


async def resolve(
    session: AsyncSession, clinic_id: uuid.UUID, secret_hash: bytes, kind: CredentialKind
) -> Resolved | None:
    """The credential with ``secret_hash``, its active membership, user and clinic, in one
    statement; None when there is none (or its membership or user is gone or disabled). The
    session must be entered in ``clinic_id``."""
    found = (
        await session.execute(
            select(
                Credential.id,
                Credential.user_id,
                Credential.revoked_at,
                Credential.expires_at,
                Credential.created_at,
                Credential.last_used_at,
                Membership.role,
                Clinic.require_mfa,
                User.totp_enabled_at,
                User.auth_epoch,
            )
            .join(
                Membership,
                (Membership.user_id == Credential.user_id)
                & (Membership.tenant_id == Credential.tenant_id)
                & Membership.active,
            )
            .join(Clinic, Clinic.id == Credential.tenant_id)
            .join(User, (User.id == Credential.user_id) & User.active)
            .where(Credential.secret_hash == secret_hash, Credential.kind == kind)
        )
    ).one_or_none()
    if found is None:
        return None
    return Resolved(
        credential_id=found.id,
        user_id=found.user_id,
        clinic_id=clinic_id,
        kind=kind,
        role=found.role,
        revoked=found.revoked_at is not None,
        expires_at=found.expires_at,
        created_at=found.created_at,
        last_used_at=found.last_used_at or found.created_at,
        require_mfa=found.require_mfa,
        mfa_enabled=found.totp_enabled_at is not None,
        user_epoch=found.auth_epoch,
    )


def idle(settings: Settings, resolved: Resolved, now: dt.datetime) -> bool:
    """A login session unused for longer than the idle timeout (as far as ``resolved`` knows:
    another process may have used it since)."""
    return resolved.kind is CredentialKind.session and now - resolved.last_used_at > (
        dt.timedelta(minutes=settings.session_idle_timeout_minutes)
    )


def admit(settings: Settings, resolved: Resolved | None, now: dt.datetime) -> Principal:
    """Who ``resolved`` authenticates now; every refusal is the same 401."""
    if resolved is None or resolved.revoked or resolved.expires_at <= now:
        raise Unauthenticated("The credential is not valid, has expired or was revoked.")
    if idle(settings, resolved, now):
        raise Unauthenticated("The session has been idle too long; log in again.")
    return Principal(
        user_id=resolved.user_id,
        clinic_id=resolved.clinic_id,
        role=resolved.role,
        credential_id=resolved.credential_id,
        credential_kind=resolved.kind,
        mfa_pending=resolved.require_mfa and not resolved.mfa_enabled,
        stepped_up=_stepped_up(
            settings, resolved.kind, resolved.mfa_enabled, resolved.created_at, now
        ),
    )


async def touch(session: AsyncSession, resolved: Resolved, now: dt.datetime) -> Resolved:
    """Record the credential's use, at most once a minute: touching it on every request would
    turn every read into a write. What it answers knows the use."""
    if now - resolved.last_used_at <= _TOUCH_EVERY:
        return resolved
    await session.execute(
        update(Credential)
        .where(Credential.id == resolved.credential_id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return dataclasses.replace(resolved, last_used_at=now)


async def list_tokens(session: AsyncSession, caller: Principal) -> list[Credential]:
    result = await session.scalars(
        select(Credential)
        .where(Credential.user_id == caller.user_id, Credential.kind == CredentialKind.api_token)
        .order_by(Credential.id)
    )
    return list(result.all())


async def create_token(
    session: AsyncSession, settings: Settings, caller: Principal, name: str, days: int
) -> Issued:
    membership = (
        await session.scalars(select(Membership).where(Membership.user_id == caller.user_id))
    ).one()
    return await issue(
        session,
        settings,
        membership,
        CredentialKind.api_token,
        name=name,
        lifetime=dt.timedelta(days=days),
    )


async def revoke(session: AsyncSession, caller: Principal, credential_id: uuid.UUID) -> Credential:
    credential = await find(session, caller, Credential, credential_id)
    if credential is None or credential.user_id != caller.user_id:
        raise NotFound("No such token.")
    if credential.revoked_at is None:
        credential.revoked_at = utcnow()
    return credential


async def revoke_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """End the user's login sessions in the session's clinic (after a privilege change)."""
    await session.execute(
        update(Credential)
        .where(
            Credential.user_id == user_id,
            Credential.kind == CredentialKind.session,
            Credential.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


async def _revoke_in_every_clinic(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    kinds: tuple[CredentialKind, ...],
) -> None:
    """Revoke the user's credentials of these kinds in every clinic they belong to.

    Credentials are tenant rows, so each clinic's are revoked under that clinic's own
    row-level security (no policy wider than a clinic is needed): the caller's clinic in the
    request's transaction, every other clinic in a transaction of its own (no transaction
    switches clinics). Those commit on their own: revoking is safe to repeat, so a failure
    half-way leaves fewer live credentials, never more.
    """
    await enter_user(session, user_id)
    clinics = await session.scalars(
        select(Membership.tenant_id)
        .where(Membership.user_id == user_id)
        .order_by(Membership.tenant_id)
        .execution_options(vetify_user_scope=True)
    )
    now = utcnow()
    for clinic_id in clinics.all():
        async with in_clinic(session, sessions, clinic_id) as there:
            await there.execute(
                update(Credential)
                .where(
                    Credential.user_id == user_id,
                    Credential.kind.in_(kinds),
                    Credential.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )


async def end_sessions_everywhere(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], caller: Principal
) -> None:
    """Every login session of the caller, in all their clinics, ends now."""
    await _revoke_in_every_clinic(session, sessions, caller.user_id, (CredentialKind.session,))


async def logout_everywhere(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], caller: Principal
) -> None:
    """Every session and API token of the caller, in all their clinics, ends now."""
    await revoke_all_credentials(session, sessions, caller.user_id)


async def revoke_all_credentials(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID
) -> None:
    """Every session and API token of the user, in all their clinics, ends now."""
    await _revoke_in_every_clinic(
        session, sessions, user_id, (CredentialKind.session, CredentialKind.api_token)
    )


async def current_user_and_clinic(session: AsyncSession, caller: Principal) -> tuple[User, Clinic]:
    return await session.get_one(User, caller.user_id), await _clinic(session, caller.clinic_id)


async def _clinic(session: AsyncSession, clinic_id: uuid.UUID) -> Clinic:
    """The clinic the session is in (its row is visible to its members only)."""
    return await get_or_404(session, InClinic(clinic_id), Clinic, clinic_id, "clinic")


# -- invitations ----------------------------------------------------------------------------
class EmailUnverified(Forbidden):
    slug, title = "email-unverified", "Verify your email address first"

    def __init__(self) -> None:
        super().__init__(
            "Follow the link mailed to your address (a new one: POST"
            " /api/v1/auth/verify-email/resend) before inviting staff or starting to pay."
        )


async def require_verified_email(session: AsyncSession, caller: Principal) -> None:
    """Refuse what an address nobody has proved may not do: bring others in, or pay."""
    user = await session.get_one(User, caller.user_id)
    if user.email_verified_at is None:
        raise EmailUnverified()


async def invite(
    session: AsyncSession, settings: Settings, caller: Principal, email: str, role: Role
) -> Invitation:
    """An invitation, mailed to ``email`` by a job: the link reaches the invitee alone."""
    if role is Role.owner and caller.role is not Role.owner:
        raise Forbidden("Only an owner may invite another owner.")
    if role in ADMINISTRATIVE:
        caller.require_step_up()
    await require_verified_email(session, caller)
    # A secret nobody knows until the job replaces it with the one it mails.
    _, unknown = crypto.new_credential(INVITATION_PREFIX, caller.clinic_id)
    invitation = Invitation(
        email=email,
        role=role,
        secret_hash=unknown,
        invited_by=caller.user_id,
        expires_at=utcnow() + dt.timedelta(hours=settings.invitation_valid_hours),
    )
    session.add(invitation)
    await session.flush()
    await enqueue(
        session,
        mails.MAIL_INVITATION,
        clinic_id=str(caller.clinic_id),
        invitation_id=str(invitation.id),
    )
    return invitation


async def invitation_to_mail(
    session: AsyncSession, tenant: Tenant, invitation_id: uuid.UUID
) -> tuple[str, Invitation, Clinic, User] | None:
    """A pending invitation with a new secret (what the job mails: the only copy), its clinic
    and who invited; None once it was accepted, withdrawn or expired."""
    invitation = await find(session, tenant, Invitation, invitation_id)
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= utcnow()
    ):
        return None
    secret, invitation.secret_hash = crypto.new_credential(INVITATION_PREFIX, tenant.clinic_id)
    inviter = await session.get_one(User, invitation.invited_by)
    return secret, invitation, await _clinic(session, tenant.clinic_id), inviter


async def list_invitations(session: AsyncSession, caller: Principal) -> list[Invitation]:
    query = of_clinic(caller, Invitation).order_by(Invitation.id)
    return list((await session.scalars(query)).all())


async def revoke_invitation(
    session: AsyncSession, caller: Principal, invitation_id: uuid.UUID
) -> None:
    invitation = await find(session, caller, Invitation, invitation_id)
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.revoked_at is None and invitation.accepted_at is None:
        if invitation.role in ADMINISTRATIVE:
            caller.require_step_up()
        invitation.revoked_at = utcnow()


async def accept_invitation(
    session: AsyncSession,
    guard: LoginGuard,
    token: str,
    name: str | None,
    password: str,
    totp_code: str | None = None,
) -> tuple[User, Clinic, Membership]:
    clinic_id = crypto.parse_credential(INVITATION_PREFIX, token)
    invalid = NotFound("The invitation is not valid, has expired or was already used.")
    if clinic_id is None:
        raise invalid
    await enter_tenant(session, clinic_id)
    invitation = (
        await session.scalars(
            select(Invitation).where(Invitation.secret_hash == crypto.hash_secret(token))
        )
    ).one_or_none()
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= utcnow()
    ):
        raise invalid
    user = await _user_by_email(session, invitation.email)
    if user is not None:
        user = await _prove_account(session, guard, invitation.email, password, totp_code)
    elif not name:
        raise InvalidInput("A new account needs a name.")
    else:
        user = User(
            id=new_id(),
            email=invitation.email,
            name=name,
            password_hash=await passwords.hash(password),
        )
        session.add(user)
        await session.flush()
        await mails.verify_address(session, user)
    existing = (
        await session.scalars(select(Membership).where(Membership.user_id == user.id))
    ).one_or_none()
    if existing is not None:
        raise Conflict("You are already a member of this clinic.")
    membership = Membership(user_id=user.id, role=invitation.role)
    invitation.accepted_at = utcnow()
    session.add(membership)
    await session.flush()
    return user, await _clinic(session, clinic_id), membership
