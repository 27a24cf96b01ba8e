"""RFC 9457 problem details: every error the API returns, in one shape, with a stable ``type``.

Domain code raises a :class:`Problem` subclass; one handler turns it into
``application/problem+json``. Validation errors, unknown routes and unexpected exceptions go
through the same handlers, so a client never sees another error shape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.kit import context
from app.kit.logs import mark_logged
from app.kit.sealing import Unreadable
from app.kit.types import PATTERN_MEANINGS

PROBLEM_BASE = "https://vetify.dev/problems/"
MEDIA_TYPE = "application/problem+json"

logger = logging.getLogger("vetify.errors")


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    loc: list[str | int] = Field(description="Where the error is: body/query/path, then the field")
    msg: str = Field(max_length=1000)
    type: str = Field(max_length=100)


TEXT_MAX = 2000
"""The longest ``detail`` and ``instance``: what a request put there is cut to it."""


class ProblemBody(BaseModel):
    """The problem+json document."""

    type: str = Field(max_length=200, examples=[PROBLEM_BASE + "not-found"])
    title: str = Field(max_length=200)
    status: int = Field(ge=400, le=599)
    detail: str | None = Field(default=None, max_length=TEXT_MAX)
    instance: str | None = Field(default=None, max_length=TEXT_MAX)
    errors: list[FieldError] | None = None
    request_id: str | None = Field(
        default=None,
        max_length=128,
        description="The request's id (also its X-Request-ID header): quote it to support.",
    )


class Problem(Exception):
    status: int = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ):
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        if status is not None:
            self.status = status

    @classmethod
    def type_uri(cls) -> str:
        return PROBLEM_BASE + cls.slug

    def body(self, instance: str | None = None) -> ProblemBody:
        # Both may carry what a client sent (a path, a value): cut, so that answering an
        # error can never fail on the document's own limits.
        return ProblemBody(
            type=self.type_uri(),
            title=self.title,
            status=self.status,
            detail=_clip(self.detail),
            instance=_clip(instance),
            request_id=_request_id(),
        )


def _request_id() -> str | None:
    under_way = context.current()
    return under_way.request_id if under_way is not None else None


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_MAX:
        return text
    return text[: TEXT_MAX - 1] + "…"


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthenticated(Problem):
    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="vetify"'})


class InvalidCredentials(Unauthenticated):
    slug, title = "invalid-credentials", "Invalid credentials"


class MfaRequired(Unauthenticated):
    """The password was right; the login needs a valid second factor as well."""

    slug, title = "mfa-required", "A second factor is required"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed for your role"


class MfaEnrolmentRequired(Forbidden):
    slug, title = "mfa-enrolment-required", "Enrol a second factor first"


class StepUpRequired(Forbidden):
    """A security setting changes only from a session that passed a second factor minutes ago."""

    slug, title = "step-up-required", "Step-up authentication required"


class CsrfRefused(Forbidden):
    slug, title = "csrf", "Cross-site request refused"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


BILLING_PATH = "/api/v1/billing"


class PaymentRequired(Problem):
    """A write by a clinic that is read-only until it pays (docs/billing.md)."""

    status, slug, title = 402, "payment-required", "Payment required"

    def __init__(self) -> None:
        super().__init__(
            "This clinic is read-only until it pays: its trial ended, or its subscription was"
            f" cancelled or is unpaid past the grace period. Reads and exports still work. An"
            f" owner or admin can pay at {BILLING_PATH} (POST {BILLING_PATH}/checkout, or"
            f" {BILLING_PATH}/portal).",
            headers={"Link": f'<{BILLING_PATH}>; rel="payment"'},
        )


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class InvalidInput(Problem):
    status, slug, title = 422, "validation-error", "Request is not valid"

    def __init__(self, detail: str | None = None, errors: Sequence[FieldError] = ()):
        super().__init__(detail)
        self.errors = list(errors)

    def body(self, instance: str | None = None) -> ProblemBody:
        body = super().body(instance)
        body.errors = self.errors or None
        return body


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


CLOSE = {"Connection": "close"}
"""For a refusal that leaves part of the request unread: the server closes the connection
after the answer, rather than wait for (or read as a next request) what is left of it."""


class RequestTimeout(Problem):
    status, slug, title = 408, "request-timeout", "Request body not received in time"


class UriTooLong(Problem):
    status, slug, title = 414, "uri-too-long", "URL too long"


class HeadersTooLarge(Problem):
    status, slug, title = 431, "headers-too-large", "Request headers too large"


class SealedValueUnreadable(Problem):
    """A value stored sealed that the answer needs does not open with the keys this service
    holds (its data key shredded or lost, the key-encryption key missing from the keyring or
    KMS, the stored bytes altered). Nothing the client can change; an operator can, and the
    log says which value and why."""

    status, slug, title = 500, "sealed-value-unreadable", "Stored value does not open"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "service-unavailable", "Service unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 5):
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


def _render(problem: Problem, path: str) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=path).model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=problem.headers,
    )


ProblemPage = Callable[[Problem, Request], Response | None]
"""How the app shows a problem to a person: a page, or None where problem+json is the answer
(``app.state.problem_page``, set by the web app; the kit knows no templates)."""


def problem_response(problem: Problem, request: Request) -> Response:
    page: ProblemPage | None = getattr(request.app.state, "problem_page", None)
    shown = page(problem, request) if page is not None else None
    return shown if shown is not None else _render(problem, request.url.path)


def problem_asgi(problem: Problem) -> ASGIApp:
    """``problem`` as an ASGI app, for middleware that answers before any route runs."""

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        await _render(problem, scope["path"])(scope, receive, send)

    return respond


def _loc(loc: Iterable[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


E = TypeVar("E", bound=Exception)


class HandlerMismatch(RuntimeError):
    """An exception handler was given an exception of a class it was not registered for."""


def _handled(exc: Exception, kind: type[E]) -> E:
    """The exception, as the class its handler was registered for (Starlette types every
    handler's argument as ``Exception``)."""
    if not isinstance(exc, kind):
        raise HandlerMismatch(f"a {kind.__name__} handler got {type(exc).__name__}") from exc
    return exc


async def _on_problem(request: Request, exc: Exception) -> Response:
    return problem_response(_handled(exc, Problem), request)


def error_message(err: Any) -> str:
    """Pydantic's message, but for a pattern that stands for a rule, the rule in words."""
    if err["type"] == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(err.get("ctx", {}).get("pattern", ""))
        if meaning:
            return meaning
    return str(err.get("msg", ""))


async def _on_validation(request: Request, exc: Exception) -> Response:
    errors = [
        FieldError(loc=_loc(err.get("loc", ())), msg=error_message(err)[:1000], type=err["type"])
        for err in _handled(exc, RequestValidationError).errors()
    ]
    return problem_response(InvalidInput("See errors for the fields at fault.", errors), request)


_HTTP_PROBLEMS: dict[int, type[Problem]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


async def _on_http(request: Request, exc: Exception) -> Response:
    exc = _handled(exc, StarletteHTTPException)
    cls = _HTTP_PROBLEMS.get(exc.status_code)
    if cls is None:
        problem = Problem(str(exc.detail), status=exc.status_code)
    else:
        problem = cls(None if exc.status_code in (404, 405) else str(exc.detail))
    problem.headers = {**(problem.headers or {}), **(exc.headers or {})} or None
    if exc.status_code == 405:
        problem.headers = {**(problem.headers or {}), "Allow": _allowed_methods(request)}
    return problem_response(problem, request)


def _allowed_methods(request: Request) -> str:
    """Every method of the path, not only those of the route that answered: each method of a
    path is a route of its own, and Starlette names the first one's methods."""
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "methods_by_path", None
    )
    if table is None:
        table = [
            (compile_path(context.path)[0], set(context.methods))
            for context in iter_route_contexts(request.app.routes)
            if context.path and context.methods
        ]
        request.app.state.methods_by_path = table
    path = request.scope["path"]
    return ", ".join(sorted(set().union(*(m for regex, m in table if regex.match(path)))))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    mark_logged(exc)
    return problem_response(Problem(), request)


async def _on_unreadable(request: Request, exc: Exception) -> Response:
    # The message names the scope and key version, never a key or a value.
    logger.error(
        "a sealed value does not open on %s %s: %s",
        request.method,
        request.url.path,
        _handled(exc, Unreadable),
        exc_info=exc,
    )
    return problem_response(
        SealedValueUnreadable(
            "Part of what was asked for is stored sealed and does not open with the keys the "
            "service holds. Nothing was changed. The operator has been told."
        ),
        request,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(Unreadable, _on_unreadable)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


def responses(*problems: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problems a route can answer with."""
    by_status: dict[int, list[type[Problem]]] = {}
    for cls in problems:
        by_status.setdefault(cls.status, []).append(cls)
    return {
        status: {
            "description": " / ".join(sorted({c.title for c in classes}))
            or HTTPStatus(status).phrase,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
        }
        for status, classes in sorted(by_status.items())
    }
