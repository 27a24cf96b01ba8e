"""Accounts: signup, login, sessions and API tokens, invitations; the caller (Principal)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import mfa
from app.auth.models import Credential, CredentialKind, Invitation, Membership, Role, User
from app.auth.permissions import MFA_EXEMPT, Action, allows
from app.billing import access as billing
from app.billing.models import BillingAccount
from app.billing.plans import DEFAULT_PLAN, Plan
from app.clinics.models import Clinic, Location
from app.db.tenancy import enter_tenant, enter_user
from app.kit import crypto
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.problems import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    MfaEnrolmentRequired,
    MfaRequired,
    NotFound,
    Unauthenticated,
)
from app.settings import Settings

SESSION_COOKIE = "vetify_session"
SESSION_PREFIX = "vts"
TOKEN_PREFIX = "vtk"  # noqa: S105 - a prefix, not a secret  # nosec B105
INVITATION_PREFIX = "vti"
# Touching last_used_at on every request would turn every read into a write.
_TOUCH_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and the one clinic they act in for this request."""

    user_id: uuid.UUID
    clinic_id: uuid.UUID
    role: Role
    credential_id: uuid.UUID
    credential_kind: CredentialKind
    plan: Plan = DEFAULT_PLAN
    """The clinic's plan: its quotas."""
    mfa_pending: bool = False
    """The clinic requires multi-factor authentication and this user has not enrolled."""
    read_only: bool = False
    """The clinic has not paid (docs/billing.md): writes are refused with 402."""

    def can(self, action: Action) -> bool:
        return allows(self.role, action)

    def require(self, action: Action) -> None:
        # Enrolment first: until then the member may do nothing else, whatever their role.
        if self.mfa_pending and (
            self.credential_kind is CredentialKind.api_token or action not in MFA_EXEMPT
        ):
            raise MfaEnrolmentRequired(
                "This clinic requires multi-factor authentication: log in with a session and"
                " enrol (POST /api/v1/auth/mfa/totp) first. API tokens of members without it"
                " are refused."
            )
        if not self.can(action):
            raise Forbidden(f"Your role ({self.role}) may not do {action}.")


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.scalars(select(User).where(func.lower(User.email) == email.lower()))
    return result.one_or_none()


async def _check_password(session: AsyncSession, email: str, password: str) -> User:
    user = await _user_by_email(session, email)
    # verify_password runs argon2 even for an unknown email, so both cost the same.
    if not crypto.verify_password(user.password_hash if user else None, password) or not (
        user and user.active
    ):
        raise InvalidCredentials("The email or the password is wrong.")
    if crypto.password_needs_rehash(user.password_hash):
        user.password_hash = crypto.hash_password(password)
    return user


# -- signup -----------------------------------------------------------------------------------
async def signup(
    session: AsyncSession,
    *,
    clinic_name: str,
    location_name: str,
    timezone: str,
    owner_name: str,
    email: str,
    password: str,
) -> tuple[Clinic, User, Location]:
    """A new clinic with its first location and its owner.

    An existing user may open another clinic by giving their own password.
    """
    user = await _user_by_email(session, email)
    if user is not None:
        user = await _check_password(session, email, password)
    clinic = Clinic(id=new_id(), name=clinic_name, timezone=timezone)
    await enter_tenant(session, clinic.id)
    session.add(clinic)
    if user is None:
        user = User(
            id=new_id(), email=email, name=owner_name, password_hash=crypto.hash_password(password)
        )
        session.add(user)
    await session.flush()
    location = Location(name=location_name)
    session.add_all([location, Membership(user_id=user.id, role=Role.owner)])
    await session.flush()
    return clinic, user, location


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
        raise InvalidCredentials("The email or the password is wrong.")
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
) -> Issued:
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
        expires_at=now + lifetime,
        last_used_at=now,
    )
    session.add(credential)
    await session.flush()
    user = await session.get(User, membership.user_id)
    clinic = await session.get(Clinic, membership.tenant_id)
    assert user is not None
    assert clinic is not None
    principal = Principal(
        user_id=membership.user_id,
        clinic_id=membership.tenant_id,
        role=membership.role,
        credential_id=credential.id,
        credential_kind=kind,
        mfa_pending=clinic.require_mfa and not user.mfa_enabled,
    )
    return Issued(secret, credential, principal)


async def owner_emails(session: AsyncSession) -> list[str]:
    """The addresses of the session's clinic's active owners: notices about the clinic itself."""
    result = await session.scalars(
        select(User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.role == Role.owner, Membership.active, User.active)
        .order_by(User.email)
    )
    return list(result.all())


async def has_mfa(session: AsyncSession, user_id: uuid.UUID) -> bool:
    user = await session.get(User, user_id)
    return user is not None and user.mfa_enabled


async def login(
    session: AsyncSession,
    settings: Settings,
    email: str,
    password: str,
    clinic_id: uuid.UUID | None,
    totp_code: str | None = None,
    presented_session: str | None = None,
) -> Issued:
    """A new session, always: a session cookie the client already had is revoked, never
    reused or extended (session fixation)."""
    if presented_session:
        await _retire(session, presented_session)
    user = await _check_password(session, email, password)
    # Only after the password was right, and before anything about the user's clinics is said.
    if user.mfa_enabled:
        if not totp_code:
            raise MfaRequired("Send totp_code: a code from your authenticator or a recovery code.")
        if not await mfa.accept_second_factor(session, user, totp_code):
            raise MfaRequired("The code is not valid or was already used.")
    membership = await _choose_clinic(session, user.id, clinic_id)
    return await issue(session, settings, membership, CredentialKind.session)


async def _retire(session: AsyncSession, secret: str) -> None:
    clinic_id = crypto.parse_credential(SESSION_PREFIX, secret)
    if clinic_id is None:
        return
    await enter_tenant(session, clinic_id)
    await session.execute(
        update(Credential)
        .where(
            Credential.secret_hash == crypto.hash_secret(secret),
            Credential.kind == CredentialKind.session,
            Credential.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


async def switch_clinic(
    session: AsyncSession, settings: Settings, caller: Principal, clinic_id: uuid.UUID
) -> Issued:
    if caller.credential_kind is not CredentialKind.session:
        raise Forbidden("An API token acts in one clinic; create a token in the other clinic.")
    membership = await _choose_clinic(session, caller.user_id, clinic_id)
    await revoke(session, caller, caller.credential_id)
    return await issue(session, settings, membership, CredentialKind.session)


async def authenticate(
    session: AsyncSession, settings: Settings, secret: str, kind: CredentialKind
) -> Principal:
    """Resolve a session cookie or bearer token; every failure is the same 401."""
    prefix = SESSION_PREFIX if kind is CredentialKind.session else TOKEN_PREFIX
    clinic_id = crypto.parse_credential(prefix, secret)
    if clinic_id is None:
        raise Unauthenticated("The credential is not valid.")
    await enter_tenant(session, clinic_id)
    credential = (
        await session.scalars(
            select(Credential).where(
                Credential.secret_hash == crypto.hash_secret(secret), Credential.kind == kind
            )
        )
    ).one_or_none()
    now = utcnow()
    if credential is None or credential.revoked_at is not None or credential.expires_at <= now:
        raise Unauthenticated("The credential is not valid, has expired or was revoked.")
    last_used = credential.last_used_at or credential.created_at
    if kind is CredentialKind.session and now - last_used > dt.timedelta(
        minutes=settings.session_idle_timeout_minutes
    ):
        raise Unauthenticated("The session has been idle too long; log in again.")
    found = (
        await session.execute(
            select(Membership, Clinic.plan, Clinic.require_mfa, BillingAccount)
            .join(Clinic, Clinic.id == Membership.tenant_id)
            .outerjoin(BillingAccount, BillingAccount.tenant_id == Membership.tenant_id)
            .where(Membership.user_id == credential.user_id, Membership.active)
        )
    ).one_or_none()
    user = await session.get(User, credential.user_id)
    if found is None or user is None or not user.active:
        raise Unauthenticated("The credential is not valid, has expired or was revoked.")
    membership, plan, require_mfa, account = found
    if now - last_used > _TOUCH_EVERY:
        credential.last_used_at = now
    return Principal(
        user_id=credential.user_id,
        clinic_id=clinic_id,
        role=membership.role,
        credential_id=credential.id,
        credential_kind=kind,
        plan=plan,
        mfa_pending=require_mfa and not user.mfa_enabled,
        read_only=not billing.writable(account, settings, now),
    )


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
    credential = await session.get(Credential, credential_id)
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
    session: AsyncSession, caller: Principal, kinds: tuple[CredentialKind, ...]
) -> None:
    """Revoke the caller's credentials of these kinds in every clinic they belong to.

    Credentials are tenant rows, so this enters each clinic in turn (the user's memberships,
    listed through the ``app.user_id`` policy, say which) and revokes there under that
    clinic's own row-level security: no policy wider than a clinic is needed. It ends back in
    the caller's clinic.
    """
    await enter_user(session, caller.user_id)
    clinics = await session.scalars(
        select(Membership.tenant_id)
        .where(Membership.user_id == caller.user_id)
        .order_by(Membership.tenant_id)
        .execution_options(vetify_user_scope=True)
    )
    now = utcnow()
    for clinic_id in clinics.all():
        await enter_tenant(session, clinic_id)
        await session.execute(
            update(Credential)
            .where(
                Credential.user_id == caller.user_id,
                Credential.kind.in_(kinds),
                Credential.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
    await enter_tenant(session, caller.clinic_id)


async def end_sessions_everywhere(session: AsyncSession, caller: Principal) -> None:
    """Every login session of the caller, in all their clinics, ends now."""
    await _revoke_in_every_clinic(session, caller, (CredentialKind.session,))


async def logout_everywhere(session: AsyncSession, caller: Principal) -> None:
    """Every session and API token of the caller, in all their clinics, ends now."""
    await _revoke_in_every_clinic(
        session, caller, (CredentialKind.session, CredentialKind.api_token)
    )


async def current_user_and_clinic(session: AsyncSession, caller: Principal) -> tuple[User, Clinic]:
    user = await session.get(User, caller.user_id)
    clinic = await session.get(Clinic, caller.clinic_id)
    assert user is not None
    assert clinic is not None
    return user, clinic


# -- invitations ----------------------------------------------------------------------------
async def invite(
    session: AsyncSession, settings: Settings, caller: Principal, email: str, role: Role
) -> tuple[str, Invitation]:
    if role is Role.owner and caller.role is not Role.owner:
        raise Forbidden("Only an owner may invite another owner.")
    secret, secret_hash = crypto.new_credential(INVITATION_PREFIX, caller.clinic_id)
    invitation = Invitation(
        email=email,
        role=role,
        secret_hash=secret_hash,
        invited_by=caller.user_id,
        expires_at=utcnow() + dt.timedelta(hours=settings.invitation_valid_hours),
    )
    session.add(invitation)
    await session.flush()
    return secret, invitation


async def list_invitations(session: AsyncSession) -> list[Invitation]:
    return list((await session.scalars(select(Invitation).order_by(Invitation.id))).all())


async def revoke_invitation(session: AsyncSession, invitation_id: uuid.UUID) -> None:
    invitation = await session.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound("No such invitation.")
    if invitation.revoked_at is None and invitation.accepted_at is None:
        invitation.revoked_at = utcnow()


async def accept_invitation(
    session: AsyncSession, token: str, name: str | None, password: str
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
        user = await _check_password(session, invitation.email, password)
    elif not name:
        raise InvalidInput("A new account needs a name.")
    else:
        user = User(
            id=new_id(),
            email=invitation.email,
            name=name,
            password_hash=crypto.hash_password(password),
        )
        session.add(user)
        await session.flush()
    existing = (
        await session.scalars(select(Membership).where(Membership.user_id == user.id))
    ).one_or_none()
    if existing is not None:
        raise Conflict("You are already a member of this clinic.")
    membership = Membership(user_id=user.id, role=invitation.role)
    invitation.accepted_at = utcnow()
    session.add(membership)
    await session.flush()
    clinic = await session.get(Clinic, clinic_id)
    assert clinic is not None
    return user, clinic, membership
