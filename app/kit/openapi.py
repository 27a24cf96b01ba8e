"""The OpenAPI document, with problem+json as the only error shape.

FastAPI declares its own 422 (``HTTPValidationError``) on every route with parameters; the
service answers validation errors as problem+json instead, so the document says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.kit.problems import MEDIA_TYPE, InvalidInput, ProblemBody, ServiceUnavailable, responses

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemBody"}


def problem_aware_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in (
        ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
        .pop("$defs", {})
        .items()
    ):
        components[name] = definition
    components["ProblemBody"] = ProblemBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["ProblemBody"].pop("$defs", None)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    invalid = responses(InvalidInput)[422]
    unavailable = responses(ServiceUnavailable)[503]
    for url, path in schema.get("paths", {}).items():
        for operation in path.values():
            if url.startswith("/api/"):
                # Any route that touches the database answers 503 while it is unreachable.
                operation["responses"].setdefault("503", unavailable)
            if "422" in operation.get("responses", {}):
                operation["responses"]["422"] = {
                    "description": invalid["description"],
                    "content": {MEDIA_TYPE: {"schema": _PROBLEM_REF}},
                }
    return schema
