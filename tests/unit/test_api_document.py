"""The OpenAPI document's error declarations and the docs page (app/kit/openapi.py) on an app
made here, so each test builds what it reads (tests/unit/test_openapi.py reads the real app's
document, built once for its module): a route with a body may answer 400, 413 and 408, an API
route 503 and 429, any 422 is problem+json; /docs serves Swagger UI from this origin with the
request's nonce on its one inline script."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from app.kit.headers import SecurityHeaders
from app.kit.openapi import install_docs, problem_aware_openapi
from app.kit.problems import MEDIA_TYPE

PROBLEM = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}


class Pet(BaseModel):
    name: str


def _app() -> FastAPI:
    app = FastAPI(title="Clinic")

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
    paths = problem_aware_openapi(_app())["paths"]
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
    assert schemas["ProblemBody"]["properties"]["errors"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/FieldError"
    }


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
