"""The web app wired into the service: its routers, its static files, its error pages."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from app.web import book, clients, errors, session, signup, today
from app.web.pages import STATIC

ROUTERS = (session.router, signup.router, today.router, book.router, clients.router)
STATIC_PATH = "/static"


class Static(StaticFiles):
    """The pages' scripts and styles: cached, but asked again each time (``no-cache``), so a
    deploy's new file is used at once and an unchanged one costs a 304."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_PATH, Static(directory=STATIC), name="static")
    app.state.problem_page = errors.problem_page
