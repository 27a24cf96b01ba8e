"""HTTP for accounts: signup, login/logout, clinic switch, API tokens, invitation acceptance."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from app.auth import enrolment, service, signin
from app.auth.deps import AppSettings, Guard, per_user, requires, same_site_login
from app.auth.lockout import AccountThrottled
from app.auth.models import CredentialKind, User
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.auth.quotas import per_ip
from app.auth.schemas import (
    AcceptInvitationIn,
    ClinicRef,
    JoinedOut,
    LoginIn,
    MfaEnabledOut,
    RecoveryCodesOut,
    SecondFactorIn,
    SessionOut,
    SwitchClinicIn,
    TokenCreated,
    TokenIn,
    TokenOut,
    TotpCodeIn,
    TotpEnrolment,
    UserOut,
)
from app.clinics.models import Clinic
from app.db.session import DbSession, DbSessions
from app.kit import csrf
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import (
    Conflict,
    CsrfRefused,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    MfaRequired,
    NotFound,
    Unauthenticated,
    responses,
)
from app.kit.ratelimit import TooManyRequests
from app.settings import Settings

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
OwnCredentials = Annotated[Principal, Depends(requires(Action.own_credentials))]
OwnSession = Annotated[Principal, Depends(requires(Action.own_session))]
SESSION_PROBLEMS = (Unauthenticated, CsrfRefused, Forbidden)


async def _session_out(
    session: DbSession, caller: Principal, issued: service.Issued | None = None
) -> SessionOut:
    user, clinic = await service.current_user_and_clinic(session, caller)
    return _session_body(user, clinic, caller, issued)


def _session_body(
    user: User, clinic: Clinic, caller: Principal, issued: service.Issued | None
) -> SessionOut:
    return SessionOut(
        user=UserOut.model_validate(user),
        clinic=ClinicRef.model_validate(clinic),
        role=caller.role,
        expires_at=issued.credential.expires_at if issued else None,
        csrf_token=csrf.token_for(issued.secret) if issued else None,
        mfa_enrolment_required=caller.mfa_pending,
    )


async def _login_response(
    session: DbSession, settings: Settings, response: Response, issued: service.Issued
) -> SessionOut:
    signin.set_session_cookies(response, settings, issued.secret, issued.credential)
    return await _session_out(session, issued.principal, issued)


@router.post(
    "/login",
    responses=responses(
        InvalidCredentials,
        MfaRequired,
        CsrfRefused,
        Conflict,
        InvalidInput,
        TooManyRequests,
        AccountThrottled,
    ),
    summary="Log in; sets the session cookie (and the CSRF token's)",
    dependencies=[Depends(same_site_login), Depends(per_ip(lambda q: q.login))],
)
async def login(
    body: LoginIn,
    request: Request,
    session: DbSession,
    settings: AppSettings,
    response: Response,
    guard: Guard,
    sessions: DbSessions,
) -> SessionOut:
    issued = await signin.log_in(
        request,
        session,
        sessions,
        settings,
        guard,
        email=body.email,
        password=body.password,
        clinic_id=body.clinic_id,
        totp_code=body.totp_code,
    )
    return await _login_response(session, settings, response, issued)


@router.post(
    "/switch",
    responses=responses(*SESSION_PROBLEMS, NotFound, InvalidInput),
    summary="Act in another of your clinics (new session)",
)
async def switch_clinic(
    body: SwitchClinicIn,
    caller: OwnSession,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    response: Response,
) -> SessionOut:
    switched = await service.switch_clinic(session, sessions, settings, caller, body.clinic_id)
    issued = switched.issued
    signin.set_session_cookies(response, settings, issued.secret, issued.credential)
    return _session_body(switched.user, switched.clinic, issued.principal, issued)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*SESSION_PROBLEMS),
    summary="End this session (or revoke the token used for this call)",
)
async def logout(caller: OwnSession, session: DbSession, settings: AppSettings) -> Response:
    await service.revoke(session, caller, caller.credential_id)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    signin.clear_session_cookies(response, settings)
    return response


@router.post(
    "/logout-everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*SESSION_PROBLEMS),
    summary="End all your sessions and revoke all your API tokens, in every clinic",
)
async def logout_everywhere(
    caller: OwnSession, session: DbSession, sessions: DbSessions, settings: AppSettings
) -> Response:
    if caller.credential_kind is not CredentialKind.session:
        # A script's token must not be able to end its person's logins.
        raise Forbidden("Log out everywhere from a login session.")
    await service.logout_everywhere(session, sessions, caller)
    security_event(SecurityEvent.token_revoked, outcome="revoked_everywhere")
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    signin.clear_session_cookies(response, settings)
    return response


@router.get(
    "/me",
    responses=responses(Unauthenticated, Forbidden),
    summary="Who am I, where, with which role",
)
async def me(caller: OwnSession, session: DbSession) -> SessionOut:
    return await _session_out(session, caller)


# -- multi-factor ------------------------------------------------------------------------------
@router.post(
    "/mfa/totp",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*SESSION_PROBLEMS, Conflict),
    summary="Start enrolling an authenticator app (TOTP): a new secret, shown once",
)
async def start_totp(caller: OwnSession, session: DbSession) -> TotpEnrolment:
    started = await enrolment.start(session, caller)
    return TotpEnrolment(secret=started.secret, provisioning_uri=started.uri)


@router.post(
    "/mfa/totp/confirm",
    responses=responses(*SESSION_PROBLEMS, Conflict, InvalidInput),
    summary="Turn multi-factor on with a code from the new secret (new session, recovery codes)",
)
async def confirm_totp(
    body: TotpCodeIn,
    caller: OwnSession,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    response: Response,
) -> MfaEnabledOut:
    codes, issued = await enrolment.confirm(session, sessions, settings, caller, body.code)
    out = await _login_response(session, settings, response, issued)
    return MfaEnabledOut(**out.model_dump(), recovery_codes=codes)


@router.post(
    "/mfa/totp/disable",
    responses=responses(*SESSION_PROBLEMS, Conflict, InvalidInput),
    summary="Turn multi-factor off with a current code or a recovery code (new session)",
)
async def disable_totp(
    body: SecondFactorIn,
    caller: OwnSession,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    response: Response,
) -> SessionOut:
    issued = await enrolment.disable(session, sessions, settings, caller, body.code)
    return await _login_response(session, settings, response, issued)


@router.post(
    "/mfa/recovery-codes",
    responses=responses(*SESSION_PROBLEMS, Conflict, InvalidInput),
    summary="New recovery codes for a current code; the old ones stop working",
)
async def regenerate_recovery_codes(
    body: TotpCodeIn, caller: OwnSession, session: DbSession
) -> RecoveryCodesOut:
    return RecoveryCodesOut(
        recovery_codes=await enrolment.regenerate_codes(session, caller, body.code)
    )


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
    responses=responses(*SESSION_PROBLEMS, InvalidInput, TooManyRequests),
    summary="Create an API token acting in this clinic (shown once)",
    dependencies=[Depends(per_user(lambda q: q.token_create))],
)
async def create_token(
    body: TokenIn, caller: OwnCredentials, session: DbSession, settings: AppSettings
) -> TokenCreated:
    days = body.expires_in_days or settings.api_token_default_days
    issued = await service.create_token(session, settings, caller, body.name, days)
    security_event(
        SecurityEvent.token_created, outcome="created", token_id=str(issued.credential.id)
    )
    return TokenCreated(
        **TokenOut.model_validate(issued.credential).model_dump(), token=issued.secret
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*SESSION_PROBLEMS, NotFound, InvalidInput),
    summary="Revoke one of my API tokens (effective at once)",
)
async def revoke_token(token_id: uuid.UUID, caller: OwnCredentials, session: DbSession) -> None:
    await service.revoke(session, caller, token_id)
    security_event(SecurityEvent.token_revoked, outcome="revoked", token_id=str(token_id))


@router.post(
    "/invitations/accept",
    status_code=status.HTTP_201_CREATED,
    responses=responses(
        InvalidCredentials,
        MfaRequired,
        NotFound,
        Conflict,
        InvalidInput,
        TooManyRequests,
        AccountThrottled,
    ),
    summary="Join a clinic with an invitation token (a new account, or yours)",
    dependencies=[Depends(per_ip(lambda q: q.login))],
)
async def accept_invitation(
    body: AcceptInvitationIn, session: DbSession, guard: Guard
) -> JoinedOut:
    user, clinic, membership = await service.accept_invitation(
        session, guard, body.token, body.name, body.password, body.totp_code
    )
    return JoinedOut(
        clinic=ClinicRef.model_validate(clinic),
        user=UserOut.model_validate(user),
        role=membership.role,
    )
