"""What the pages' routes depend on: the posted form (its CSRF token read before the caller is
authenticated), and the viewer and clinic every page shows."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from app.auth import service as auth
from app.auth.principal import Principal
from app.kit import csrf
from app.web.pages import Clinic, Viewer


async def read_form(request: Request) -> None:
    """Parse a posted form first, so that ``authenticate`` finds its CSRF token (a page works
    without JavaScript: its forms cannot set the header an API client sends)."""
    if request.method in csrf.SAFE_METHODS:
        return
    token = (await request.form()).get(csrf.FORM_FIELD)
    setattr(request.state, csrf.FORM_FIELD, token if isinstance(token, str) else None)


async def posted(request: Request) -> FormData:
    """The form :func:`read_form` parsed (Starlette keeps it on the request)."""
    return await request.form()


async def view(session: AsyncSession, caller: Principal) -> tuple[Viewer, Clinic]:
    user, clinic = await auth.current_user_and_clinic(session, caller)
    return (
        Viewer(name=user.name, principal=caller),
        Clinic(
            name=clinic.name,
            timezone=clinic.timezone,
            country=clinic.country,
            read_only=caller.read_only,
        ),
    )
