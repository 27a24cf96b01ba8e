"""The clinic itself, its locations and its rooms."""

from __future__ import annotations

import uuid

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import mails as auth_mails
from app.auth import service as auth
from app.auth.lockout import LoginGuard
from app.auth.models import Membership, Role, User
from app.auth.principal import Principal
from app.billing import account as billing
from app.clinics.models import Clinic, Location, Room
from app.clinics.schemas import (
    ClinicPatch,
    LocationIn,
    LocationPatch,
    RoomIn,
    RoomPatch,
    SignupIn,
)
from app.db.repository import apply, get_or_404, of_clinic, referenced
from app.db.tenancy import InClinic, Tenant, check_tenant, enter_tenant
from app.kit.ids import new_id
from app.kit.problems import FieldError, InvalidInput
from app.settings import Settings


async def current(session: AsyncSession, tenant: Tenant) -> Clinic:
    return await get_or_404(session, tenant, Clinic, tenant.clinic_id, "clinic")


async def update(
    session: AsyncSession, caller: Principal, changes: ClinicPatch, settings: Settings
) -> Clinic:
    clinic = await current(session, caller)
    if changed(clinic, changes, "require_mfa"):
        # A security setting; a step-up also proves the caller's own second factor, so that
        # the one who turns the requirement on is not the first to be shut out.
        caller.require_step_up()
    if changed(clinic, changes, "inactive_client_years"):
        # The next retention run erases, irreversibly, whom a shorter policy makes inactive:
        # a security setting too (ADR 0031), whichever way it moves, as require_mfa is.
        caller.require_step_up()
    if changed(clinic, changes, "country", "record_retention_years"):
        # A shorter keeping removes clinical records at the next retention run (ADR 0035).
        caller.require_step_up()
    apply(clinic, changes)
    minimum = settings.record_minimum_years(clinic.country)
    if clinic.record_retention_years is not None and clinic.record_retention_years < minimum:
        detail = (
            f"Medical records must be kept at least {minimum} years where the clinic practises"
            f" ({clinic.country or 'any country not listed'})."
        )
        field = FieldError(loc=["body", "record_retention_years"], msg=detail, type="too_short")
        raise InvalidInput(detail, [field])
    await session.flush()
    return clinic


def changed(clinic: Clinic, changes: ClinicPatch, *fields: str) -> bool:
    """Whether ``changes`` sets any of ``fields`` to something else than ``clinic`` has."""
    return any(
        name in changes.model_fields_set and getattr(changes, name) != getattr(clinic, name)
        for name in fields
    )


async def timezone_of(session: AsyncSession, tenant: Tenant) -> str:
    return (await current(session, tenant)).timezone


def locations(tenant: Tenant) -> Select[Location]:
    return of_clinic(tenant, Location)


async def create_location(session: AsyncSession, tenant: Tenant, data: LocationIn) -> Location:
    location = Location(tenant_id=check_tenant(session, tenant), **data.model_dump())
    session.add(location)
    await session.flush()
    return location


async def update_location(
    session: AsyncSession, tenant: Tenant, location_id: uuid.UUID, changes: LocationPatch
) -> Location:
    location = await get_or_404(session, tenant, Location, location_id, "location")
    apply(location, changes)
    await session.flush()
    return location


def rooms(tenant: Tenant, location_id: uuid.UUID | None) -> Select[Room]:
    query = of_clinic(tenant, Room)
    return query.where(Room.location_id == location_id) if location_id else query


async def create_room(session: AsyncSession, tenant: Tenant, data: RoomIn) -> Room:
    await referenced(session, tenant, Location, data.location_id, "location_id", "location")
    room = Room(tenant_id=tenant.clinic_id, **data.model_dump())
    session.add(room)
    await session.flush()
    return room


async def update_room(
    session: AsyncSession, tenant: Tenant, room_id: uuid.UUID, changes: RoomPatch
) -> Room:
    room = await get_or_404(session, tenant, Room, room_id, "room")
    apply(room, changes)
    await session.flush()
    return room


# -- opening a clinic -------------------------------------------------------------------------
async def sign_up(
    session: AsyncSession, guard: LoginGuard, settings: Settings, data: SignupIn
) -> tuple[Clinic, Location, User]:
    """A new clinic, its first location and its owner (a new account, or the signer's own,
    proven as at log-in), its trial begun: the API's sign-up and the sign-up page."""
    owner = await auth.owner_for_new_clinic(
        session, guard, data.email, data.owner_name, data.password, data.totp_code
    )
    clinic = Clinic(id=new_id(), name=data.clinic_name, timezone=data.timezone)
    location = Location(name=data.location_name)
    await open_clinic(session, clinic, location, owner, trial_days=settings.billing_trial_days)
    return clinic, location, owner


async def open_clinic(
    session: AsyncSession,
    clinic: Clinic,
    location: Location,
    owner: User,
    *,
    trial_days: int,
    remind: bool = True,
) -> None:
    """A new clinic with its first location, its owner's membership and its billing account
    (a trial without a card), in the session's transaction, which it enters in the new clinic.

    The one way a clinic comes to exist: the sign-up route and the test and demo fixtures
    both come here. ``remind``: schedule the owners' notice that the trial ends. An owner whose
    address is not verified yet is mailed a link that verifies it.
    """
    await enter_tenant(session, clinic.id)
    session.add_all([clinic, owner])
    await session.flush()
    session.add_all([location, Membership(user_id=owner.id, role=Role.owner)])
    await session.flush()
    await billing.open_account(session, InClinic(clinic.id), trial_days, remind=remind)
    if owner.email_verified_at is None:
        await auth_mails.verify_address(session, owner)
