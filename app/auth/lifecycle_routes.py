"""HTTP for the account lifecycle: verify the address, reset a forgotten password, change it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, status

from app.auth import lifecycle
from app.auth.deps import AppSettings, Guard, per_user
from app.auth.lifecycle_schemas import (
    Accepted,
    PasswordChangeIn,
    PasswordResetCompleteIn,
    PasswordResetIn,
    VerifyEmailIn,
)
from app.auth.quotas import AppQuotas, per_ip
from app.auth.routes import SESSION_PROBLEMS, OwnSession, _login_response
from app.auth.schemas import SessionOut, UserOut
from app.db.session import DbSession, DbSessions
from app.kit.problems import Conflict, InvalidInput, NotFound, responses
from app.kit.ratelimit import TooManyRequests

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
RESET_ANSWER = (
    "If an account has this address, a link to reset its password is on its way; it works"
    " once, for a short time."
)


@router.post(
    "/verify-email",
    responses=responses(*SESSION_PROBLEMS, NotFound, InvalidInput),
    summary="Verify your address with the token of the link mailed to it (logged in)",
)
async def verify_email(body: VerifyEmailIn, caller: OwnSession, session: DbSession) -> UserOut:
    return UserOut.model_validate(await lifecycle.verify_email(session, caller, body.token))


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(*SESSION_PROBLEMS, Conflict, TooManyRequests),
    summary="Mail a new link that verifies your address",
    dependencies=[Depends(per_user(lambda q: q.verification_mail))],
)
async def resend_verification(caller: OwnSession, session: DbSession) -> Accepted:
    await lifecycle.resend_verification(session, caller)
    return Accepted(detail="A new link is on its way to your address.")


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(InvalidInput, TooManyRequests),
    summary="Forgot the password: mail a single-use reset link (same answer for any address)",
    dependencies=[Depends(per_ip(lambda q: q.password_reset))],
)
async def request_password_reset(
    body: PasswordResetIn, request: Request, session: DbSession, quotas: AppQuotas
) -> Accepted:
    await lifecycle.request_password_reset(
        session, request.app.state.limiter, quotas.password_reset_address, body.email
    )
    return Accepted(detail=RESET_ANSWER)


@router.post(
    "/password-reset/complete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(NotFound, InvalidInput, TooManyRequests),
    summary="Set a new password with the reset link's token; logs you out everywhere",
    dependencies=[Depends(per_ip(lambda q: q.password_reset))],
)
async def complete_password_reset(
    body: PasswordResetCompleteIn, session: DbSession, sessions: DbSessions, guard: Guard
) -> Response:
    await lifecycle.reset_password(session, sessions, guard, body.token, body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    responses=responses(*SESSION_PROBLEMS, InvalidInput, TooManyRequests),
    summary="Change your password (current one, and your second factor if you use one);"
    " ends your other sessions and API tokens everywhere and renews this session",
    dependencies=[Depends(per_user(lambda q: q.password_change))],
)
async def change_password(
    body: PasswordChangeIn,
    caller: OwnSession,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    response: Response,
) -> SessionOut:
    issued = await lifecycle.change_password(
        session,
        sessions,
        settings,
        caller,
        current=body.current_password,
        new=body.new_password,
        totp_code=body.totp_code,
    )
    return await _login_response(session, settings, response, issued)
