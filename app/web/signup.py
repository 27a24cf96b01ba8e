"""Signing a clinic up: its name and time zone, its owner's account (a new one, or theirs,
proven as at log-in), its trial begun; then the log-in page."""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette import status
from starlette.datastructures import FormData

from app.auth.deps import AppSettings, Guard, same_site_login
from app.auth.lockout import AccountThrottled
from app.auth.quotas import per_ip
from app.clinics import service as clinics
from app.clinics.schemas import SignupIn
from app.db.session import DbSession
from app.kit.problems import InvalidCredentials, MfaRequired
from app.web import forms
from app.web.deps import posted, read_form
from app.web.errors import carry_headers
from app.web.pages import render, see_other

router = APIRouter(include_in_schema=False, dependencies=[Depends(read_form)])
Form = Annotated[FormData, Depends(posted)]
FIELDS = ("clinic_name", "timezone", "owner_name", "email", "password", "totp_code")
ZONES = sorted(zoneinfo.available_timezones())


def _form(
    request: Request,
    values: dict[str, str],
    errors: forms.Errors,
    *,
    needs_code: bool = False,
    status_code: int = status.HTTP_200_OK,
) -> Response:
    shown = {k: v for k, v in values.items() if k not in ("password", "totp_code")}
    return render(
        request,
        "signup.html",
        status_code=status_code,
        values=shown,
        errors=errors,
        zones=ZONES,
        needs_code=needs_code,
    )


@router.get("/signup")
async def signup_form(request: Request) -> Response:
    return _form(request, {"timezone": "UTC"}, {})


@router.post(
    "/signup",
    dependencies=[Depends(same_site_login), Depends(per_ip(lambda q: q.signup))],
)
async def sign_up(
    request: Request, form: Form, session: DbSession, guard: Guard, settings: AppSettings
) -> Response:
    values = forms.fields(form, FIELDS)
    needs_code = "totp_code" in values
    checked = forms.validate(SignupIn, values)
    if isinstance(checked, dict):
        return _form(
            request,
            values,
            checked,
            needs_code=needs_code,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        # A savepoint: the account's check comes first, and a refusal leaves nothing made.
        async with forms.undone_if_refused(session):
            await clinics.sign_up(session, guard, settings, checked)
    except MfaRequired as exc:
        errors = {"totp_code": exc.detail or exc.title} if needs_code else {}
        return _form(request, values, errors, needs_code=True, status_code=exc.status)
    except (InvalidCredentials, AccountThrottled) as exc:
        refused = _form(
            request,
            values,
            {"form": exc.detail or exc.title},
            needs_code=needs_code,
            status_code=exc.status,
        )
        return carry_headers(exc, refused)
    return see_other("/login?opened=true")
