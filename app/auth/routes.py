"""HTTP for accounts: signup, login/logout, clinic switch, API tokens, invitation acceptance."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from app.auth import service
from app.auth.deps import AppSettings, Guard, per_user, requires
from app.auth.lockout import AccountThrottled
from app.auth.models import Credential
from app.auth.permissions import Action
from app.auth.quotas import per_ip
from app.auth.schemas import (
    AcceptInvitationIn,
    ClinicRef,
    JoinedOut,
    LoginIn,
    SessionOut,
    SignupIn,
    SignupOut,
    SwitchClinicIn,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserOut,
)
from app.auth.service import Principal
from app.db.session import DbSession
from app.kit.problems import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    Unauthenticated,
    responses,
)
from app.kit.ratelimit import TooManyRequests
from app.settings import Settings

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
OwnCredentials = Annotated[Principal, Depends(requires(Action.own_credentials))]


def _set_session_cookie(
    response: Response, settings: Settings, secret: str, credential: Credential
) -> None:
    response.set_cookie(
        service.SESSION_COOKIE,
        secret,
        expires=credential.expires_at,
        httponly=True,
        secure=settings.session_cookie_secure,
        samesite="strict",
        path="/",
    )


async def _session_out(
    session: DbSession, caller: Principal, credential: Credential | None = None
) -> SessionOut:
    user, clinic = await service.current_user_and_clinic(session, caller)
    return SessionOut(
        user=UserOut.model_validate(user),
        clinic=ClinicRef.model_validate(clinic),
        role=caller.role,
        expires_at=credential.expires_at if credential else None,
    )


@router.post(
    "/signup",
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidCredentials, InvalidInput, TooManyRequests, AccountThrottled),
    summary="Create a clinic, its first location and its owner",
    dependencies=[Depends(per_ip(lambda q: q.signup))],
)
async def signup(body: SignupIn, session: DbSession, guard: Guard) -> SignupOut:
    # An existing user opens another clinic with their password: guarded like a log-in.
    await guard.check(body.email)
    try:
        clinic, user, location = await service.signup(session, **body.model_dump())
    except InvalidCredentials:
        await guard.failed(body.email)
        raise
    return SignupOut(
        clinic=ClinicRef.model_validate(clinic),
        user=UserOut.model_validate(user),
        location_id=location.id,
    )


async def _login_response(
    session: DbSession, settings: Settings, response: Response, issued: service.Issued
) -> SessionOut:
    _set_session_cookie(response, settings, issued.secret, issued.credential)
    return await _session_out(session, issued.principal, issued.credential)


@router.post(
    "/login",
    responses=responses(
        InvalidCredentials, NotFound, Conflict, InvalidInput, TooManyRequests, AccountThrottled
    ),
    summary="Log in; sets the session cookie",
    dependencies=[Depends(per_ip(lambda q: q.login))],
)
async def login(
    body: LoginIn, session: DbSession, settings: AppSettings, response: Response, guard: Guard
) -> SessionOut:
    await guard.check(body.email)
    try:
        issued = await service.login(session, settings, body.email, body.password, body.clinic_id)
    except InvalidCredentials:
        await guard.failed(body.email)
        raise
    await guard.succeeded(body.email)
    return await _login_response(session, settings, response, issued)


@router.post(
    "/switch",
    responses=responses(Unauthenticated, Forbidden, NotFound, InvalidInput),
    summary="Act in another of your clinics (new session)",
)
async def switch_clinic(
    body: SwitchClinicIn,
    caller: OwnCredentials,
    session: DbSession,
    settings: AppSettings,
    response: Response,
) -> SessionOut:
    issued = await service.switch_clinic(session, settings, caller, body.clinic_id)
    return await _login_response(session, settings, response, issued)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Unauthenticated, Forbidden),
    summary="End this session (or revoke the token used for this call)",
)
async def logout(caller: OwnCredentials, session: DbSession) -> Response:
    await service.revoke(session, caller, caller.credential_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(service.SESSION_COOKIE, path="/")
    return response


@router.get(
    "/me",
    responses=responses(Unauthenticated, Forbidden),
    summary="Who am I, where, with which role",
)
async def me(caller: OwnCredentials, session: DbSession) -> SessionOut:
    return await _session_out(session, caller)


@router.get(
    "/tokens",
    responses=responses(Unauthenticated, Forbidden),
    summary="My API tokens in this clinic",
)
async def list_tokens(caller: OwnCredentials, session: DbSession) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in await service.list_tokens(session, caller)]


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    responses=responses(Unauthenticated, Forbidden, InvalidInput, TooManyRequests),
    summary="Create an API token acting in this clinic (shown once)",
    dependencies=[Depends(per_user(lambda q: q.token_create))],
)
async def create_token(
    body: TokenIn, caller: OwnCredentials, session: DbSession, settings: AppSettings
) -> TokenCreated:
    days = body.expires_in_days or settings.api_token_default_days
    issued = await service.create_token(session, settings, caller, body.name, days)
    return TokenCreated(
        **TokenOut.model_validate(issued.credential).model_dump(), token=issued.secret
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(Unauthenticated, Forbidden, NotFound, InvalidInput),
    summary="Revoke one of my API tokens (effective at once)",
)
async def revoke_token(token_id: uuid.UUID, caller: OwnCredentials, session: DbSession) -> None:
    await service.revoke(session, caller, token_id)


@router.post(
    "/invitations/accept",
    status_code=status.HTTP_201_CREATED,
    responses=responses(InvalidCredentials, NotFound, Conflict, InvalidInput, TooManyRequests),
    summary="Join a clinic with an invitation token",
    dependencies=[Depends(per_ip(lambda q: q.login))],
)
async def accept_invitation(body: AcceptInvitationIn, session: DbSession) -> JoinedOut:
    user, clinic, membership = await service.accept_invitation(
        session, body.token, body.name, body.password
    )
    return JoinedOut(
        clinic=ClinicRef.model_validate(clinic),
        user=UserOut.model_validate(user),
        role=membership.role,
    )
