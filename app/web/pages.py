"""Rendering a page: the templates, what every page is given, and how values are shown.

Every page gets the request's CSP nonce (for its one inline script, none today), the CSRF token
of the session (for its forms and htmx's header), the caller and their clinic, and ``t`` for
its words. Times are shown in the clinic's time zone, dates and numbers in its locale (English
words, the clinic's country's formats).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette import status

from app.auth.principal import Principal
from app.auth.service import SESSION_COOKIE
from app.kit import csrf, headers
from app.web import text

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.globals.update(t=text.t, name_of=text.name_of)


@dataclass(frozen=True)
class Clinic:
    """The clinic a page is shown in: its name, and how it writes times, dates and numbers."""

    name: str
    timezone: str
    country: str | None
    read_only: bool = False

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def locale(self) -> Locale:
        try:
            return Locale.parse(f"en_{self.country}") if self.country else Locale.parse("en")
        except (UnknownLocaleError, ValueError):
            return Locale.parse("en")

    def local(self, moment: dt.datetime) -> dt.datetime:
        return moment.astimezone(self.zone)

    def today(self) -> dt.date:
        return dt.datetime.now(self.zone).date()

    def time(self, moment: dt.datetime) -> str:
        return format_time(self.local(moment), "short", locale=self.locale)

    def date(self, day: dt.date | dt.datetime, width: str = "medium") -> str:
        if isinstance(day, dt.datetime):
            day = self.local(day).date()
        return format_date(day, width, locale=self.locale)

    def number(self, value: Decimal | float, digits: int = 2) -> str:
        return format_decimal(value, format=f"#,##0.{'0' * digits}", locale=self.locale)


@dataclass(frozen=True)
class Viewer:
    """Who is looking: their name and role, for the header, and what they may do."""

    name: str
    principal: Principal


def render(
    request: Request,
    template: str,
    *,
    status_code: int = status.HTTP_200_OK,
    viewer: Viewer | None = None,
    clinic: Clinic | None = None,
    **values: Any,
) -> HTMLResponse:
    session_secret = request.cookies.get(SESSION_COOKIE)
    page = environment.get_template(template).render(
        path=request.url.path,
        nonce=headers.nonce(request.scope),
        csrf_token=csrf.token_for(session_secret) if session_secret and viewer else "",
        viewer=viewer,
        clinic=clinic,
        **values,
    )
    return HTMLResponse(page, status_code=status_code)


def is_htmx(request: Request) -> bool:
    """An htmx request wants a fragment (the part it swaps in), not a whole page."""
    return request.headers.get("hx-request") == "true"


def see_other(url: str) -> RedirectResponse:
    """After a form's POST: the browser GETs the result (so a reload does not post again)."""
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
