"""Logging in (with a second factor when the account has one) and out, from the pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette import status
from starlette.datastructures import FormData

from app.auth import service, signin
from app.auth.deps import AppSettings, Guard, requires, same_site_login
from app.auth.lockout import AccountThrottled
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.auth.quotas import per_ip
from app.auth.schemas import LoginIn
from app.db.session import DbSession, DbSessions
from app.kit.problems import Conflict, InvalidCredentials, MfaRequired
from app.web import forms
from app.web.deps import posted, read_form
from app.web.errors import carry_headers, safe_next
from app.web.pages import render, see_other
from app.web.text import t

router = APIRouter(include_in_schema=False, dependencies=[Depends(read_form)])
OwnSession = Annotated[Principal, Depends(requires(Action.own_session))]
Form = Annotated[FormData, Depends(posted)]


def _login_page(
    request: Request,
    *,
    email: str = "",
    next_url: str = "/",
    errors: forms.Errors | None = None,
    needs_code: bool = False,
    status_code: int = status.HTTP_200_OK,
    notice: str | None = None,
) -> Response:
    return render(
        request,
        "login.html",
        status_code=status_code,
        email=email,
        next_url=safe_next(next_url),
        errors=errors or {},
        needs_code=needs_code,
        notice=notice,
    )


@router.get("/login")
async def login_form(
    request: Request, next: str = "/", out: bool = False, opened: bool = False
) -> Response:
    notice = t("login.logged_out") if out else t("login.opened") if opened else None
    return _login_page(request, next_url=next, notice=notice)


@router.post(
    "/login",
    dependencies=[Depends(same_site_login), Depends(per_ip(lambda q: q.login))],
)
async def login(
    request: Request,
    form: Form,
    session: DbSession,
    sessions: DbSessions,
    settings: AppSettings,
    guard: Guard,
) -> Response:
    sent = forms.fields(form, ("email", "password", "totp_code"))
    next_url = safe_next(str(form.get("next") or "/"))
    needs_code = "totp_code" in sent
    checked = forms.validate(LoginIn, sent)
    if isinstance(checked, dict):
        return _login_page(
            request,
            email=sent.get("email", ""),
            next_url=next_url,
            errors=checked,
            needs_code=needs_code,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    # No savepoint around it: a refused log-in has written nothing (each check comes before any
    # write), and a savepoint would hold a pooled connection through the password's hash, which
    # the log-in takes care not to do (``auth.service._check_password_unpooled``).
    try:
        issued = await signin.log_in(
            request,
            session,
            sessions,
            settings,
            guard,
            email=checked.email,
            password=checked.password,
            clinic_id=None,
            totp_code=checked.totp_code,
        )
    except MfaRequired as exc:
        errors = {"totp_code": exc.detail or t("login.code_needed")} if needs_code else {}
        return _login_page(
            request,
            email=checked.email,
            next_url=next_url,
            errors=errors,
            needs_code=True,
            status_code=exc.status,
            notice=None if needs_code else t("login.code_needed"),
        )
    except (InvalidCredentials, AccountThrottled, Conflict) as exc:
        refused = _login_page(
            request,
            email=checked.email,
            next_url=next_url,
            errors={"form": exc.detail or exc.title},
            needs_code=needs_code,
            status_code=exc.status,
        )
        return carry_headers(exc, refused)
    response = see_other(next_url)
    signin.set_session_cookies(response, settings, issued.secret, issued.credential)
    return response


@router.post("/logout")
async def logout(caller: OwnSession, session: DbSession, settings: AppSettings) -> Response:
    await service.revoke(session, caller, caller.credential_id)
    response = see_other("/login?out=true")
    signin.clear_session_cookies(response, settings)
    return response
