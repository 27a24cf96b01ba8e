"""Logging a person in and out from a browser, shared by the JSON API and the web pages: the
log-in with its back-off and security events, and the session's two cookies."""

from __future__ import annotations

import uuid

from fastapi import Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import service
from app.auth.lockout import AccountThrottled, LoginGuard
from app.auth.models import Credential
from app.auth.quotas import client_ip
from app.kit import csrf
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import InvalidCredentials, MfaRequired
from app.settings import Settings


async def log_in(
    request: Request,
    session: AsyncSession,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    guard: LoginGuard,
    *,
    email: str,
    password: str,
    clinic_id: uuid.UUID | None,
    totp_code: str | None,
) -> service.Issued:
    """A new login session for the person the password (and second factor) proves, every
    failure spending the account's back-off and recorded as a security event."""
    ip = client_ip(request)
    try:
        # A wrong second factor counts too: it is what limits guessing TOTP codes.
        async with guard.attempt(email):
            issued = await service.login(
                session,
                settings,
                email,
                password,
                clinic_id,
                totp_code=totp_code,
                presented_session=request.cookies.get(service.SESSION_COOKIE),
                sessions=sessions,
            )
    except MfaRequired:
        if totp_code:  # a code was sent, and refused (not merely asked for)
            security_event(SecurityEvent.mfa_failed, outcome="refused", client_ip=ip)
        raise
    except (InvalidCredentials, AccountThrottled) as exc:
        why = "throttled" if isinstance(exc, AccountThrottled) else "refused"
        security_event(SecurityEvent.login_failed, outcome=why, client_ip=ip)
        raise
    principal = issued.principal
    security_event(
        SecurityEvent.login_succeeded,
        outcome="succeeded",
        client_ip=ip,
        user_id=principal.user_id,
        clinic_id=principal.clinic_id,
        credential_id=principal.credential_id,
    )
    return issued


def set_session_cookies(
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
    # Readable by the service's own pages (not HttpOnly), which echo it in X-CSRF-Token.
    response.set_cookie(
        csrf.CSRF_COOKIE,
        csrf.token_for(secret),
        expires=credential.expires_at,
        httponly=False,
        secure=settings.session_cookie_secure,
        samesite="strict",
        path="/",
    )


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name, httponly in ((service.SESSION_COOKIE, True), (csrf.CSRF_COOKIE, False)):
        response.delete_cookie(
            name,
            path="/",
            secure=settings.session_cookie_secure,
            httponly=httponly,
            samesite="strict",
        )
