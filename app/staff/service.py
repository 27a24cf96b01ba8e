"""Members of the clinic: list, change role, deactivate; invitations live in auth."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import service as auth
from app.auth.models import Credential, Membership, Role, User
from app.auth.permissions import ADMINISTRATIVE
from app.auth.principal import Principal
from app.db.repository import belongs_to, of_clinic
from app.db.tenancy import Tenant, check_tenant
from app.kit.clock import utcnow
from app.kit.events import SecurityEvent, security_event
from app.kit.pagination import Page, paginate
from app.kit.problems import Conflict, Forbidden, NotFound
from app.settings import Settings
from app.staff.schemas import StaffOut, StaffPatch


def members(tenant: Tenant) -> Select[uuid.UUID, uuid.UUID, Role, bool, str, str]:
    return (
        select(
            Membership.id,
            Membership.user_id,
            Membership.role,
            Membership.active,
            User.name,
            User.email,
        )
        .join(User, User.id == Membership.user_id)
        .where(belongs_to(tenant, Membership))
    )


async def list_page(
    session: AsyncSession, tenant: Tenant, cursor: str | None, limit: int
) -> Page[StaffOut]:
    check_tenant(session, tenant)
    rows, next_cursor = await paginate(session, members(tenant), [Membership.id], cursor, limit)
    return Page[StaffOut](items=[StaffOut.model_validate(r) for r in rows], next_cursor=next_cursor)


async def get(session: AsyncSession, tenant: Tenant, user_id: uuid.UUID) -> StaffOut:
    check_tenant(session, tenant)
    member = members(tenant).where(Membership.user_id == user_id)
    row = (await session.execute(member)).one_or_none()
    if row is None:
        raise NotFound("No staff member with this id.")
    return StaffOut.model_validate(row)


async def lock_holder(
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    caller: Principal,
    user_id: uuid.UUID,
) -> str:
    """The member's address, whose log-in lock the caller's clinic may lift: only while their
    account opens no other clinic. The lock protects the account, and the account opens every
    clinic its user works for; no one clinic may lower that for the others (ADR 0014)."""
    member = await get(session, caller, user_id)
    caller.require_step_up()
    if not await auth.active_clinics(sessions, user_id) <= {caller.clinic_id}:
        raise Conflict(
            "This account also opens another clinic, and its log-in lock protects that clinic"
            " too, so no single clinic may lift it. Ask the user to wait until it expires (at"
            f" most {settings.login_lockout_minutes} minutes) or to reset their password by"
            " email."
        )
    return member.email


async def _membership(session: AsyncSession, tenant: Tenant, user_id: uuid.UUID) -> Membership:
    check_tenant(session, tenant)
    membership = (
        await session.scalars(of_clinic(tenant, Membership).where(Membership.user_id == user_id))
    ).one_or_none()
    if membership is None:
        raise NotFound("No staff member with this id.")
    return membership


async def update_member(
    session: AsyncSession, caller: Principal, user_id: uuid.UUID, changes: StaffPatch
) -> StaffOut:
    if user_id == caller.user_id:
        # Nobody raises, lowers or locks out themselves: another owner or admin does it.
        raise Forbidden("You cannot change your own role or deactivate yourself.")
    membership = await _membership(session, caller, user_id)
    fields = changes.model_dump(exclude_unset=True)
    touches_owner = membership.role is Role.owner or fields.get("role") is Role.owner
    if touches_owner and caller.role is not Role.owner:
        raise Forbidden("Only an owner may change an owner or make someone owner.")
    role_changes = fields.get("role", membership.role) is not membership.role
    changed = role_changes or fields.get("active", membership.active) != membership.active
    if changed and (membership.role in ADMINISTRATIVE or fields.get("role") in ADMINISTRATIVE):
        caller.require_step_up()
    demotes = membership.role is Role.owner and (
        fields.get("role", Role.owner) is not Role.owner or fields.get("active") is False
    )
    if demotes and await _active_owners(session, caller) <= 1:
        # Two owners demoting each other at once: the second waits for the first and, counting
        # again, finds itself the last owner.
        raise Conflict("A clinic needs at least one active owner.")
    was = (membership.role, membership.active)
    for key, value in fields.items():
        setattr(membership, key, value)
    _raise_events(user_id, was, (membership.role, membership.active))
    if fields.get("active") is False:
        await _revoke_credentials(session, caller, user_id)
    elif role_changes:
        # A privilege change starts the member's logins afresh (ADR 0009); their API tokens
        # act with the role the membership has at each request.
        await auth.revoke_sessions(session, user_id)
    await session.flush()
    return await get(session, caller, user_id)


def _raise_events(user_id: uuid.UUID, was: tuple[Role, bool], now: tuple[Role, bool]) -> None:
    """What changed of who may do what: security events (the trail keeps them, ADR 0027)."""
    if now[0] is not was[0]:
        security_event(
            SecurityEvent.role_changed,
            outcome="changed",
            target_user_id=str(user_id),
            from_role=str(was[0]),
            to_role=str(now[0]),
        )
    if now[1] != was[1]:
        changed = SecurityEvent.member_reactivated if now[1] else SecurityEvent.member_deactivated
        security_event(
            changed, outcome="reactivated" if now[1] else "deactivated", target_user_id=str(user_id)
        )


async def deactivate(session: AsyncSession, caller: Principal, user_id: uuid.UUID) -> None:
    await update_member(session, caller, user_id, StaffPatch(active=False))


async def _active_owners(session: AsyncSession, tenant: Tenant) -> int:
    """Active owners, their rows locked until this transaction ends (see ``update_member``)."""
    owners = await session.scalars(
        select(Membership.id)
        .where(belongs_to(tenant, Membership), Membership.role == Role.owner, Membership.active)
        .order_by(Membership.id)
        .with_for_update()
    )
    return len(owners.all())


async def _revoke_credentials(session: AsyncSession, tenant: Tenant, user_id: uuid.UUID) -> None:
    await session.execute(
        update(Credential)
        .where(
            belongs_to(tenant, Credential),
            Credential.user_id == user_id,
            Credential.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
