"""The OpenAPI document's error declarations and the docs page (app/kit/openapi.py) on an app
made here, so each test builds what it reads (tests/unit/test_openapi.py reads the real app's
document, built once for its module): a route with a body may answer 400, 413 and 408, an API
route 503 and 429, any 422 is problem+json; /docs serves Swagger UI from this origin with the
request's nonce on its one inline script."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from app.kit.headers import SecurityHeaders
from app.kit.openapi import STORABLE_TEXT, install_docs, problem_aware_openapi
from app.kit.problems import MEDIA_TYPE

PROBLEM = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}


class Pet(BaseModel):
    name: str


def _app() -> FastAPI:
    app = FastAPI(title="Clinic", summary="Pets and their visits")

    @app.post("/api/v1/pets")
    async def add(pet: Pet) -> None:
        return None

    @app.get("/api/v1/pets")
    async def pets(q: str = "") -> list[str]:
        return []

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {}

    return app


def test_each_operation_declares_the_problems_the_service_can_answer_it_with() -> None:
    document = problem_aware_openapi(_app())
    assert document["info"] == {
        "title": "Clinic",
        "summary": "Pets and their visits",
        "version": "0.1.0",
    }
    # FastAPI's own 422 body is not what the service answers: only the problem is declared.
    schemas = set(document["components"]["schemas"])
    assert {"Pet", "ProblemBody", "FieldError"} <= schemas
    assert not {"HTTPValidationError", "ValidationError"} & schemas
    paths = document["paths"]
    add, search, live = (
        paths["/api/v1/pets"]["post"],
        paths["/api/v1/pets"]["get"],
        paths["/health/live"]["get"],
    )
    assert set(add["responses"]) == {"200", "400", "408", "413", "422", "429", "503"}
    assert set(search["responses"]) == {"200", "422", "429", "503"}
    assert set(live["responses"]) == {"200"}
    for code, title in [
        ("400", "Bad request"),
        ("408", "Request body not received in time"),
        ("413", "Request body too large"),
        ("422", "Request is not valid"),
        ("429", "Too many requests"),
        ("503", "Service unavailable"),
    ]:
        assert add["responses"][code] == {"description": title, "content": PROBLEM}


def test_a_document_without_any_schema_of_its_own_gets_the_problems() -> None:
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> None:
        return None

    schemas = problem_aware_openapi(app)["components"]["schemas"]
    assert {"ProblemBody", "FieldError"} <= set(schemas)
    assert "$defs" not in schemas["ProblemBody"]
    assert set(schemas["FieldError"]["properties"]) == {"loc", "msg", "type"}
    assert schemas["ProblemBody"]["properties"]["errors"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }


class Visit(BaseModel):
    reason: str
    day: dt.date
    kind: Literal["exam", "surgery"]
    code: str = Field(pattern="^[A-Z]{3}$")
    version: Literal[2] = 2
    notes: list[str] = []
    follow_up: Visit | None = None  # recursive: the walk must end
    reply_to: str | None = None


class VisitOut(BaseModel):
    summary: str  # only in an answer: what the service sends is not narrowed


def _strings(node: Any, where: str = "") -> dict[str, dict[str, Any]]:
    """Every schema of type string under ``node``, by where it is."""
    found: dict[str, dict[str, Any]] = {}
    if isinstance(node, dict):
        if node.get("type") == "string":
            found[where] = node
        for key, value in node.items():
            found |= _strings(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found |= _strings(value, f"{where}/{index}")
    return found


def test_every_free_string_a_client_sends_is_declared_storable_and_no_other() -> None:
    """A generator reading the document (the contract stage) learns that a NUL is invalid in
    every free string of a request: parameters, bodies, their nested and recursive components;
    strings with a format, enum, const or pattern of their own keep theirs; answers are left
    alone."""
    app = FastAPI()

    @app.post("/api/v1/visits/{visit_id}")
    async def visit(visit_id: str, body: Visit, q: str = "", when: dt.date | None = None) -> None:
        return None

    @app.get("/api/v1/visits")
    async def visits(sort: Literal["day", "kind"] = Query("day")) -> VisitOut:
        return VisitOut(summary="")

    document = problem_aware_openapi(app)
    operation = document["paths"]["/api/v1/visits/{visit_id}"]["post"]
    schemas = document["components"]["schemas"]
    storable = {"type": "string", "pattern": STORABLE_TEXT}
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert parameters["visit_id"] == {"title": "Visit Id", **storable}
    assert parameters["q"] == {"title": "Q", "default": "", **storable}
    assert parameters["when"]["anyOf"][0] == {"type": "string", "format": "date"}
    listing = document["paths"]["/api/v1/visits"]["get"]
    assert "pattern" not in listing["parameters"][0]["schema"]  # an enum
    fields = schemas["Visit"]["properties"]
    assert fields["reason"] == {"title": "Reason", **storable}
    assert fields["notes"]["items"] == storable
    assert fields["reply_to"]["anyOf"][0] == storable
    assert fields["day"] == {"title": "Day", "type": "string", "format": "date"}
    assert "pattern" not in fields["kind"]
    assert fields["code"]["pattern"] == "^[A-Z]{3}$"
    assert fields["follow_up"]["anyOf"][0] == {"$ref": "#/components/schemas/Visit"}
    narrowed = {where for where, s in _strings(schemas["Visit"]).items() if "pattern" in s}
    assert narrowed == {
        "/properties/reason",
        "/properties/code",
        "/properties/notes/items",
        "/properties/reply_to/anyOf/0",
    }
    assert "pattern" not in schemas["VisitOut"]["properties"]["summary"]


async def test_the_docs_page_and_its_scripts_come_from_this_origin_under_the_nonce() -> None:
    app = FastAPI(title="Clinic", docs_url=None, redoc_url=None)  # FastAPI's own loads a CDN's
    install_docs(app)
    transport = httpx.ASGITransport(app=SecurityHeaders(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        page = await client.get("/docs")
        script = await client.get("/docs/static/swagger-ui-bundle.js")
        styles = await client.get("/docs/static/swagger-ui.css")
    assert page.status_code == 200
    (nonce,) = re.findall(r'<script nonce="([^"]+)">', page.text)
    assert f"'nonce-{nonce}'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text
    assert 'src="/docs/static/swagger-ui-bundle.js"' in page.text
    assert "<title>Clinic API</title>" in page.text
    assert (script.status_code, styles.status_code) == (200, 200)
    assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in script.text
