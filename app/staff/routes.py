from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.auth import service as auth
from app.auth.deps import AppSettings, Guard, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.session import DbSession, DbSessions
from app.kit.events import SecurityEvent, security_event
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from app.kit.problems import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StepUpRequired,
    Unauthenticated,
    responses,
)
from app.staff import service
from app.staff.schemas import (
    InvitationIn,
    InvitationOut,
    StaffOut,
    StaffPatch,
)

router = APIRouter(prefix="/api/v1/staff", tags=["staff"])
Reader = Annotated[Principal, Depends(requires(Action.staff_read))]
Manager = Annotated[Principal, Depends(requires(Action.staff_manage))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)
# Changing who administers the clinic (or may come to), or lifting a lock, needs a step-up.
SECURITY = responses(Unauthenticated, Forbidden, StepUpRequired, NotFound, Conflict, InvalidInput)


@router.get("", responses=READ, summary="Members of this clinic")
async def list_staff(
    caller: Reader,
    session: DbSession,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[StaffOut]:
    return await service.list_page(session, caller, cursor, limit)


@router.get("/invitations", responses=READ, summary="Invitations sent by this clinic")
async def list_invitations(caller: Manager, session: DbSession) -> list[InvitationOut]:
    return [InvitationOut.model_validate(i) for i in await auth.list_invitations(session, caller)]


@router.post(
    "/invitations",
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        Unauthenticated, Forbidden, auth.EmailUnverified, StepUpRequired, InvalidInput
    ),
    summary="Invite someone to join this clinic with a role: the link is mailed to them (an"
    " owner or admin: step-up)",
)
async def invite(
    body: InvitationIn, caller: Manager, session: DbSession, settings: AppSettings
) -> InvitationOut:
    return InvitationOut.model_validate(
        await auth.invite(session, settings, caller, body.email, body.role)
    )


@router.delete(
    "/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Unauthenticated, Forbidden, StepUpRequired, NotFound, InvalidInput),
    summary="Withdraw an invitation (an owner's or admin's: step-up)",
)
async def revoke_invitation(invitation_id: uuid.UUID, caller: Manager, session: DbSession) -> None:
    await auth.revoke_invitation(session, caller, invitation_id)


@router.get("/{user_id:uuid}", responses=ONE, summary="One member")
async def get_member(user_id: uuid.UUID, caller: Reader, session: DbSession) -> StaffOut:
    return await service.get(session, caller, user_id)


@router.patch(
    "/{user_id:uuid}",
    responses=SECURITY,
    summary="Change a member's role or (de)activate them (an owner or admin, or making one:"
    " step-up)",
)
async def update_member(
    user_id: uuid.UUID, body: StaffPatch, caller: Manager, session: DbSession
) -> StaffOut:
    return await service.update_member(session, caller, user_id, body)


@router.delete(
    "/{user_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SECURITY,
    summary="Remove a member (deactivates; their sessions and tokens are revoked; an owner or"
    " admin: step-up)",
)
async def remove_member(user_id: uuid.UUID, caller: Manager, session: DbSession) -> None:
    await service.deactivate(session, caller, user_id)


@router.post(
    "/{user_id:uuid}/unlock",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=SECURITY,
    summary="Lift the log-in lock that failed attempts put on a member's account (one that"
    " opens no other clinic; step-up)",
)
async def unlock_member(
    user_id: uuid.UUID,
    caller: Manager,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    guard: Guard,
) -> Response:
    email = await service.lock_holder(session, sessions, settings, caller, user_id)
    await guard.unlock(email)
    security_event(SecurityEvent.unlock, outcome="unlocked", target_user_id=str(user_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
