"""Problems shown to a person: a page with the problem's title and detail, never a trace.

A request wants a page when it comes from a browser's navigation or from htmx, and is not for
the API, the probes or the docs, which answer problem+json whatever asked. A page that needs a
log-in sends the browser to the log-in page, and back afterwards.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from starlette import status

from app.kit import csrf
from app.kit.problems import Problem, Unauthenticated
from app.web.pages import is_htmx, render, see_other

NOT_PAGES = ("/api/", "/health/", "/docs", "/openapi.json", "/metrics")


def wants_page(request: Request) -> bool:
    if request.url.path.startswith(NOT_PAGES):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site's URL."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def problem_page(problem: Problem, request: Request) -> Response | None:
    if not wants_page(request):
        return None
    if isinstance(problem, Unauthenticated):
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = "/login?next=" + quote(safe_next(back), safe="/")
        if is_htmx(request):
            # htmx follows no redirect to a whole page by itself: it is told where to go.
            return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"HX-Redirect": target})
        if request.method in csrf.SAFE_METHODS:
            return see_other(target)
    body = problem.body(instance=request.url.path)
    page = render(
        request,
        "error.html",
        status_code=problem.status,
        problem=body,
    )
    return carry_headers(problem, page)


def carry_headers(problem: Problem, page: Response) -> Response:
    """The problem's headers on its page (``Retry-After``, ``Allow``), but the API's
    ``WWW-Authenticate``: a page's log-in is a form, not a bearer token."""
    for name, value in (problem.headers or {}).items():
        if name.lower() != "www-authenticate":
            page.headers[name] = value
    return page
