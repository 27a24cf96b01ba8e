"""FastAPI dependencies: who is calling (``Caller``) and whether they may (``requires``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from app.auth import service
from app.auth.models import CredentialKind
from app.auth.permissions import Action
from app.auth.service import Principal
from app.db.session import DbSession
from app.kit.problems import Unauthenticated
from app.settings import Settings

# auto_error=False: a missing credential is our own problem+json 401, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An API token: `vtk_...`")
_cookie = APIKeyCookie(name=service.SESSION_COOKIE, auto_error=False, description="Login session")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(get_settings)]


async def authenticate(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    if bearer is not None:
        principal = await service.authenticate(
            session, settings, bearer.credentials, CredentialKind.api_token
        )
    else:
        if not cookie:
            raise Unauthenticated("Send an API token (Authorization: Bearer) or log in.")
        principal = await service.authenticate(session, settings, cookie, CredentialKind.session)
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


class requires:
    """Authenticate, then check the role table for ``action``.

    The instance is kept on the route (``dependant.call``) so tests can read which action each
    route performs.
    """

    def __init__(self, action: Action) -> None:
        self.action = action

    async def __call__(self, caller: Caller) -> Principal:
        caller.require(self.action)
        return caller
