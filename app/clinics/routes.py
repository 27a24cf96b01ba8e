from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth.deps import AppSettings, Guard, requires
from app.auth.lockout import AccountThrottled
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.auth.quotas import per_ip
from app.clinics import service
from app.clinics.models import Location, Room
from app.clinics.schemas import (
    ClinicOut,
    ClinicPatch,
    LocationIn,
    LocationOut,
    LocationPatch,
    OpenedClinic,
    OwnerOut,
    RoomIn,
    RoomOut,
    RoomPatch,
    SignupIn,
    SignupOut,
)
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, page
from app.kit.problems import (
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    MfaRequired,
    NotFound,
    StepUpRequired,
    Unauthenticated,
    responses,
)
from app.kit.ratelimit import TooManyRequests

router = APIRouter(prefix="/api/v1", tags=["clinic"])
signup_router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
"""Sign-up opens a clinic; its path stays with the other account routes."""
Reader = Annotated[Principal, Depends(requires(Action.clinic_read))]
Manager = Annotated[Principal, Depends(requires(Action.clinic_manage))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)


@router.get("/clinics/current", responses=READ, summary="The clinic this request acts in")
async def get_clinic(caller: Reader, session: DbSession) -> ClinicOut:
    return ClinicOut.model_validate(await service.current(session, caller))


@router.patch(
    "/clinics/current",
    responses=responses(Unauthenticated, Forbidden, StepUpRequired, InvalidInput),
    summary="Rename the clinic, change its time zone, require multi-factor authentication"
    " (a security setting: step-up)",
)
async def update_clinic(
    body: ClinicPatch, caller: Manager, session: DbSession, settings: AppSettings
) -> ClinicOut:
    return ClinicOut.model_validate(await service.update(session, caller, body, settings))


@router.get("/locations", responses=READ, summary="List locations")
async def list_locations(
    caller: Reader,
    session: DbSession,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[LocationOut]:
    return await page(session, service.locations(caller), LocationOut, cursor, limit)


@router.post(
    "/locations", status_code=status.HTTP_201_CREATED, responses=READ, summary="Add a location"
)
async def create_location(body: LocationIn, caller: Manager, session: DbSession) -> LocationOut:
    return LocationOut.model_validate(await service.create_location(session, caller, body))


@router.get("/locations/{location_id}", responses=ONE, summary="One location")
async def get_location(location_id: uuid.UUID, caller: Reader, session: DbSession) -> LocationOut:
    return LocationOut.model_validate(
        await get_or_404(session, caller, Location, location_id, "location")
    )


@router.patch("/locations/{location_id}", responses=ONE, summary="Change a location")
async def update_location(
    location_id: uuid.UUID, body: LocationPatch, caller: Manager, session: DbSession
) -> LocationOut:
    return LocationOut.model_validate(
        await service.update_location(session, caller, location_id, body)
    )


@router.get("/rooms", responses=READ, summary="List rooms and other bookable resources")
async def list_rooms(
    caller: Reader,
    session: DbSession,
    location_id: Annotated[uuid.UUID | None, Query()] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[RoomOut]:
    return await page(session, service.rooms(caller, location_id), RoomOut, cursor, limit)


@router.post("/rooms", status_code=status.HTTP_201_CREATED, responses=READ, summary="Add a room")
async def create_room(body: RoomIn, caller: Manager, session: DbSession) -> RoomOut:
    return RoomOut.model_validate(await service.create_room(session, caller, body))


@router.get("/rooms/{room_id}", responses=ONE, summary="One room")
async def get_room(room_id: uuid.UUID, caller: Reader, session: DbSession) -> RoomOut:
    return RoomOut.model_validate(await get_or_404(session, caller, Room, room_id, "room"))


@router.patch("/rooms/{room_id}", responses=ONE, summary="Rename or (de)activate a room")
async def update_room(
    room_id: uuid.UUID, body: RoomPatch, caller: Manager, session: DbSession
) -> RoomOut:
    return RoomOut.model_validate(await service.update_room(session, caller, room_id, body))


@signup_router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        InvalidCredentials, MfaRequired, InvalidInput, TooManyRequests, AccountThrottled
    ),
    summary="Create a clinic, its first location and its owner (a new account, or yours)",
    dependencies=[Depends(per_ip(lambda q: q.signup))],
)
async def signup(
    body: SignupIn, session: DbSession, guard: Guard, settings: AppSettings
) -> SignupOut:
    clinic, location, owner = await service.sign_up(session, guard, settings, body)
    return SignupOut(
        clinic=OpenedClinic.model_validate(clinic),
        user=OwnerOut.model_validate(owner),
        location_id=location.id,
    )
