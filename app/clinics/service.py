"""The clinic itself, its locations and its rooms."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service as auth
from app.auth.service import Principal
from app.clinics.models import Clinic, Location, Room
from app.clinics.schemas import ClinicPatch, LocationIn, LocationPatch, RoomIn, RoomPatch
from app.db.repository import apply, get_or_404, referenced
from app.kit.problems import Conflict


async def current(session: AsyncSession, clinic_id: uuid.UUID) -> Clinic:
    return await get_or_404(session, Clinic, clinic_id, "clinic")


async def update(session: AsyncSession, caller: Principal, changes: ClinicPatch) -> Clinic:
    clinic = await current(session, caller.clinic_id)
    if changes.require_mfa and not await auth.has_mfa(session, caller.user_id):
        # Otherwise the one who turns it on is the first to be shut out.
        raise Conflict("Enrol in multi-factor authentication yourself before requiring it.")
    apply(clinic, changes)
    await session.flush()
    return clinic


async def timezone_of(session: AsyncSession, clinic_id: uuid.UUID) -> str:
    return (await current(session, clinic_id)).timezone


def locations() -> Select[Location]:
    return select(Location)


async def create_location(session: AsyncSession, data: LocationIn) -> Location:
    location = Location(**data.model_dump())
    session.add(location)
    await session.flush()
    return location


async def update_location(
    session: AsyncSession, location_id: uuid.UUID, changes: LocationPatch
) -> Location:
    location = await get_or_404(session, Location, location_id, "location")
    apply(location, changes)
    await session.flush()
    return location


def rooms(location_id: uuid.UUID | None) -> Select[Room]:
    query = select(Room)
    return query.where(Room.location_id == location_id) if location_id else query


async def create_room(session: AsyncSession, data: RoomIn) -> Room:
    await referenced(session, Location, data.location_id, "location_id", "location")
    room = Room(**data.model_dump())
    session.add(room)
    await session.flush()
    return room


async def update_room(session: AsyncSession, room_id: uuid.UUID, changes: RoomPatch) -> Room:
    room = await get_or_404(session, Room, room_id, "room")
    apply(room, changes)
    await session.flush()
    return room
