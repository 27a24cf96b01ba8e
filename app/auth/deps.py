"""FastAPI dependencies: who is calling (``Caller``) and whether they may (``requires``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import service
from app.auth.cache import CredentialCache, Known
from app.auth.lockout import LoginGuard
from app.auth.models import CredentialKind, Role
from app.auth.permissions import PAYMENT_EXEMPT, Action, allows
from app.auth.principal import Principal, Standing, StandingOf
from app.auth.quotas import AppQuotas, Quotas, client_ip, spend, spend_all
from app.db.session import DbSession
from app.db.tenancy import enter_tenant
from app.kit import context, crypto, csrf
from app.kit.clock import utcnow
from app.kit.problems import CsrfRefused, PaymentRequired, Unauthenticated
from app.kit.ratelimit import Policy
from app.kit.usage import Usage
from app.observability import tracing
from app.settings import Settings

# auto_error=False: a missing credential is our own problem+json 401, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API token: `vtk_...`")
_cookie = APIKeyCookie(name=service.SESSION_COOKIE, auto_error=False, description="Login session")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_settings)]


async def login_guard(request: Request) -> LoginGuard:
    guard: LoginGuard = request.app.state.login_guard
    return guard


Guard = Annotated[LoginGuard, Depends(login_guard)]


async def authenticate(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
    quotas: AppQuotas,
) -> Principal:
    try:
        if bearer is not None:
            principal, standing = await _identify(
                request, session, settings, bearer.credentials, CredentialKind.api_token
            )
        else:
            if not cookie:
                raise Unauthenticated("Send an API token (Authorization: Bearer) or log in.")
            principal, standing = await _identify(
                request, session, settings, cookie, CredentialKind.session
            )
            if request.method not in csrf.SAFE_METHODS:
                _refuse_forgery(request, settings, cookie)
    except Unauthenticated:
        # Failed attempts spend the caller's anonymous quota: guessing tokens is rate limited.
        await spend(request, quotas.anonymous, client_ip(request))
        raise
    principal = dataclasses.replace(principal, read_only=standing.read_only)
    tracing.tag_clinic(principal.clinic_id)
    # Who is asking, for every line the request logs from here on (ids, never the email).
    context.update(
        clinic_id=principal.clinic_id,
        user_id=principal.user_id,
        credential_id=principal.credential_id,
        role=principal.role.value,
    )
    # Cost monitoring (ADR 0026): a dict increment here, flushed to the table in the background.
    usage: Usage = request.app.state.usage
    usage.request(principal.clinic_id)
    spends = [
        (quotas.clinic(standing.requests_per_minute), str(principal.clinic_id)),
        (quotas.user, str(principal.user_id)),
    ]
    if principal.credential_kind is CredentialKind.api_token:
        spends.append((quotas.token, str(principal.credential_id)))
    await spend_all(request, spends)
    return principal


async def _identify(
    request: Request, session: AsyncSession, settings: Settings, secret: str, kind: CredentialKind
) -> tuple[Principal, Standing]:
    """Who ``secret`` authenticates, and their clinic's standing (what billing says: its quota,
    whether it may write; from the provider the app wires in, as auth knows nothing of plans).

    The session enters the credential's clinic first; that statement answers the auth epochs,
    and a credential resolved under the same ones is taken from the cache (ADR 0019)."""
    clinic_id = service.credential_clinic(secret, kind)
    cache: CredentialCache = request.app.state.credentials
    key = crypto.hash_secret(secret)
    known = cache.get(key)
    epochs = await enter_tenant(
        session, clinic_id, user_id=known.resolved.user_id if known is not None else None
    )
    now = utcnow()
    hit = (
        known is not None
        and known.current(epochs, now)
        # Another process may have used it since: the database knows.
        and not service.idle(settings, known.resolved, now)
    )
    cache.count(hit=hit)
    if known is None or not hit:
        resolved = await service.resolve(session, clinic_id, key, kind)
        if resolved is None:
            cache.drop(key)
            raise Unauthenticated("The credential is not valid, has expired or was revoked.")
        standing_of: StandingOf = request.app.state.standing_of
        standing = await standing_of(session, settings, clinic_id)
        known = Known(resolved, standing, epochs.clinic, checked_at=now)
    try:
        principal = service.admit(settings, known.resolved, now)
    except Unauthenticated:
        cache.drop(key)
        raise
    touched = await service.touch(session, known.resolved, now)
    if not hit or touched is not known.resolved:  # a hit is already kept, and in place
        cache.put(key, dataclasses.replace(known, resolved=touched))
    return principal, known.standing


def _allowed_origins(settings: Settings) -> frozenset[str]:
    return csrf.allowed_origins(settings.public_url, settings.cors_allow_origins)


def _refuse_forgery(request: Request, settings: Settings, session_secret: str) -> None:
    """A request the cookie authenticates must come from our own pages (ADR 0009).

    A bearer token is exempt: a browser never attaches one by itself.
    """
    stated = csrf.stated_origin(request.headers)
    if stated is None or stated not in _allowed_origins(settings):
        raise CsrfRefused(
            "Send Origin (or Referer) naming this service's origin with requests made with the"
            " session cookie."
        )
    sent = request.headers.get(csrf.CSRF_HEADER) or getattr(request.state, csrf.FORM_FIELD, None)
    if not csrf.token_matches(session_secret, sent):
        raise CsrfRefused(
            f"Send the session's CSRF token (the {csrf.CSRF_COOKIE} cookie, or csrf_token from"
            f" the login response) in the {csrf.CSRF_HEADER} header (a page's form: in its"
            f" {csrf.FORM_FIELD} field)."
        )


async def same_site_login(request: Request, settings: AppSettings) -> None:
    """Refuse a login another site's page started (login CSRF): a browser states the page's
    origin; a client that states none (a script) is not a browser."""
    stated = csrf.stated_origin(request.headers)
    if stated is not None and stated not in _allowed_origins(settings):
        raise CsrfRefused("Log in from this service's own pages.")


Caller = Annotated[Principal, Depends(authenticate)]


def per_user(
    pick: Callable[[Quotas], Policy],
) -> Callable[[Request, Principal, Quotas], Awaitable[None]]:
    """A route dependency spending ``pick(quotas)`` per authenticated user."""

    async def spend_per_user(request: Request, caller: Caller, quotas: AppQuotas) -> None:
        await spend(request, pick(quotas), str(caller.user_id))

    return spend_per_user


class requires:
    """Authenticate, then check the role table for ``action``.

    The instance is kept on the route (``dependant.call``) so tests can read which action each
    route performs.
    """

    def __init__(self, action: Action) -> None:
        self.action = action

    async def __call__(self, request: Request, caller: Caller) -> Principal:
        caller.require(self.action)
        context.update(action=self.action.value)
        if (
            caller.read_only
            and request.method not in csrf.SAFE_METHODS
            and self.action not in PAYMENT_EXEMPT
        ):
            raise PaymentRequired()
        return caller


def required_action(dependant: Dependant) -> Action | None:
    """The action a route requires (its ``Depends(requires(...))``), if any."""
    return next(
        (d.call.action for d in dependant.dependencies if isinstance(d.call, requires)), None
    )


def document_permissions(app: FastAPI, document: dict[str, Any]) -> None:
    """Add each operation's permission to the OpenAPI document as ``x-permission``.

    The action and the roles that hold it; the committed document (docs/openapi.json) makes
    every change to who may call what a reviewed diff.
    """
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        action = required_action(dependant) if dependant is not None else None
        if action is None or not route.include_in_schema:
            continue
        for method in route.methods or ():
            document["paths"][route.path_format][method.lower()]["x-permission"] = {
                "action": action.value,
                "roles": [role.value for role in Role if allows(role, action)],
            }
