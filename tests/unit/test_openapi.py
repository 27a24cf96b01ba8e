"""The published OpenAPI document: every error a route can give is declared, as problem+json.

The real application is built but its lifespan never runs, so no database is touched.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.auth.deps import authenticate, requires
from app.auth.models import Role
from app.auth.permissions import Action
from app.main import ROUTERS, create_app
from app.settings import Settings
from tests.harness.api import PROBLEM_JSON

PUBLIC = {
    ("post", "/api/v1/auth/signup"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/invitations/accept"),
    ("post", "/api/v1/auth/password-reset"),
    ("post", "/api/v1/auth/password-reset/complete"),
    ("post", "/api/v1/billing/webhooks/stripe"),
}
PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}


def _app() -> FastAPI:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("VETIFY_DATABASE_URL", "DATABASE_URL", "VETIFY_DATABASE_OWNER_URL"):
            mp.delenv(name, raising=False)
        return create_app(Settings(database_url="postgresql+asyncpg://u@localhost/x"))


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return _app()


@pytest.fixture(scope="module")
def doc(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def _api(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [op for op in _operations(doc) if op[1].startswith("/api/v1/")]


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def _routes() -> Iterator[tuple[str, str, list[Any]]]:
    """The routers ``create_app`` includes (without a further prefix), route by route."""
    for router in ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in route.methods:
                    yield method.lower(), route.path_format, list(_calls(route.dependant))


def test_document_has_the_api(doc: dict[str, Any]) -> None:
    keys = {(m, p) for m, p, _ in _api(doc)}
    assert keys >= PUBLIC
    assert len(keys) > 40


def test_protected_operations_declare_401_and_403(doc: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path}: {code}"
        for method, path, operation in _api(doc)
        if (method, path) not in PUBLIC
        for code in ("401", "403")
        if code not in operation["responses"]
    ]
    assert not missing


def test_routes_checking_a_role_declare_403_and_the_others_authenticate(
    doc: dict[str, Any],
) -> None:
    guarded = 0
    for method, path, calls in _routes():
        responses = doc["paths"][path][method]["responses"]
        if any(isinstance(call, requires) for call in calls):
            guarded += 1
            assert "403" in responses, f"{method} {path}"
        if path.startswith("/api/v1/") and (method, path) not in PUBLIC:
            assert authenticate in calls, f"{method} {path} does not authenticate"
            assert "401" in responses
    assert guarded > 30


def test_path_parameters_are_uuids_and_declare_404(doc: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in _operations(doc):
        path_params = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        for param in path_params:
            checked += 1
            assert param["schema"].get("format") == "uuid", f"{method} {path} {param['name']}"
            assert param["schema"].get("type") == "string"
        if path_params or "{" in path:
            assert "404" in operation["responses"], f"{method.upper()} {path}"
    assert checked > 10


def test_input_declares_422(doc: dict[str, Any]) -> None:
    for method, path, operation in _operations(doc):
        params = [p for p in operation.get("parameters", []) if p["in"] in ("query", "path")]
        if "requestBody" in operation or params:
            assert "422" in operation["responses"], f"{method.upper()} {path}"


def test_every_error_is_problem_json(doc: dict[str, Any]) -> None:
    checked = 0
    for method, path, operation in _operations(doc):
        for code, response in operation["responses"].items():
            if code[0] in "45":
                checked += 1
                assert response.get("content") == PROBLEM, f"{method.upper()} {path} {code}"
    assert checked > 100


def test_problem_body_schema(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    body = schemas["ProblemBody"]
    assert {"type", "title", "status"} <= set(body["required"])
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(body["properties"])
    assert "$defs" not in body
    assert "FieldError" in schemas


def test_no_fastapi_validation_error_left(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert "HTTPValidationError" not in json.dumps(doc)


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    names = {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}
    assert names <= set(doc["components"]["schemas"])


def test_each_operation_documents_the_roles_the_reviewed_table_gives_it() -> None:
    """``x-permission`` tells an integrator which roles may call an operation: the roles of
    tests/security/who_may.toml (written apart from the code), for every operation but the
    public ones, which have none. A document of its own: the app's is built once and kept."""
    table = tomllib.loads(
        (Path(__file__).parents[1] / "security" / "who_may.toml").read_text(encoding="utf-8")
    )
    groups = {name: sorted(roles) for name, roles in table["groups"].items()}
    expected = {
        operation: None if who == "anyone" else groups[who]
        for operation, who in table["operations"].items()
    }
    documented = {
        f"{method.upper()} {path}": operation.get("x-permission")
        for method, path, operation in _api(_app().openapi())
    }
    assert documented.keys() == expected.keys()
    wrong = {
        operation: permission
        for operation, permission in documented.items()
        if (permission and sorted(permission["roles"])) != expected[operation]
        or (permission is not None and permission["action"] not in {a.value for a in Action})
        or (permission is not None and set(permission) != {"action", "roles"})
    }
    assert not wrong, wrong
    # In the roles' own order (owner first), as the table of roles reads.
    for permission in filter(None, documented.values()):
        assert permission["roles"] == [role.value for role in Role if role in permission["roles"]]


def test_the_document_is_built_once_per_app(app: FastAPI, doc: dict[str, Any]) -> None:
    """Every request for /openapi.json gets the document built the first time (with the
    problems and each operation's roles), not a rebuild."""
    again = app.openapi()
    assert again is doc
    assert again == _app().openapi()
