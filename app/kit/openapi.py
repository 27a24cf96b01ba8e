"""The OpenAPI document, with problem+json as the only error shape.

FastAPI declares its own 422 (``HTTPValidationError``) on every route with parameters; the
service answers validation errors as problem+json instead, so the document says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from swagger_ui_bundle import swagger_ui_path

from app.kit.headers import nonce
from app.kit.problems import (
    MEDIA_TYPE,
    BadRequest,
    InvalidInput,
    PayloadTooLarge,
    ProblemBody,
    RequestTimeout,
    ServiceUnavailable,
    responses,
)
from app.kit.ratelimit import TooManyRequests

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemBody"}
STORABLE_TEXT = "^[^\\x00]*$"
"""What every free string a client sends must match: PostgreSQL stores no NUL, and the service
refuses one wherever it arrives (app/kit/text.py), so the document says so and a generator
knows a NUL is invalid input, not valid input wrongly refused."""
_FORMS: dict[str, type[BaseModel]] = {}
"""Forms routes parse themselves (streamed uploads), documented as components by name."""


def multipart_body(form: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a multipart/form-data body from the stream
    itself (FastAPI would otherwise parse it whole first): the form's schema as the body."""
    _FORMS[form.__name__] = form
    schema = {"$ref": f"#/components/schemas/{form.__name__}"}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def problem_aware_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs"))  # FieldError
    components["ProblemBody"] = problem
    for name, form in _FORMS.items():
        components[name] = form.model_json_schema()
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    invalid = responses(InvalidInput)[422]
    unavailable = responses(ServiceUnavailable)[503]
    bad_request = responses(BadRequest)[400]
    too_large = responses(PayloadTooLarge)[413]
    too_slow = responses(RequestTimeout)[408]
    too_many = responses(TooManyRequests)[429]
    for url, path in schema["paths"].items():
        for operation in path.values():
            if "requestBody" in operation:
                # A body that is not parseable at all (e.g. undecodable bytes) is a 400.
                operation["responses"].setdefault("400", bad_request)
                operation["responses"].setdefault("413", too_large)
                operation["responses"].setdefault("408", too_slow)
            if url.startswith("/api/"):
                # Any route that touches the database answers 503 while it is unreachable.
                operation["responses"].setdefault("503", unavailable)
                # Every API route spends a rate-limit quota (anonymous, user, clinic...).
                operation["responses"].setdefault("429", too_many)
            if "422" in operation["responses"]:
                operation["responses"]["422"] = {
                    "description": invalid["description"],
                    "content": {MEDIA_TYPE: {"schema": _PROBLEM_REF}},
                }
    _state_storable_text(schema["paths"], components)
    return schema


def _state_storable_text(paths: dict[str, Any], components: dict[str, Any]) -> None:
    """Give every free string a client sends (parameters, and what request bodies reach) the
    :data:`STORABLE_TEXT` pattern; strings with a pattern, format or enum of their own are
    already narrower."""
    seen: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        if not isinstance(node, dict):
            return
        name = str(node.get("$ref")).removeprefix("#/components/schemas/")
        if name in components and name not in seen:
            seen.add(name)
            visit(components[name])
        if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & {*node}:
            node["pattern"] = STORABLE_TEXT
        for value in node.values():
            visit(value)

    for path in paths.values():
        for operation in path.values():
            visit([operation.get("parameters"), operation.get("requestBody")])


class SwaggerPageChanged(RuntimeError):
    """FastAPI's Swagger UI page no longer has the one inline script the nonce is put on."""


def install_docs(app: FastAPI) -> None:
    """Interactive docs at /docs with Swagger UI served by the service itself.

    FastAPI's default page loads Swagger UI from a CDN: that fails offline (clinics' networks,
    CI) and would need a third-party origin in the Content-Security-Policy.
    """
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )
        # The page's one inline script (which starts Swagger UI) runs under the CSP only
        # with this request's nonce.
        html = bytes(page.body).decode()
        if html.count("<script>") != 1:
            raise SwaggerPageChanged("FastAPI's Swagger UI page changed shape")
        html = html.replace("<script>", f'<script nonce="{nonce(request.scope)}">')
        return HTMLResponse(html)
