"""Every error leaves as RFC 9457 problem+json, through the handlers ``install`` registers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, StringConstraints

from app.kit import problems
from app.kit.problems import (
    MEDIA_TYPE,
    Conflict,
    InvalidCredentials,
    InvalidInput,
    NotFound,
    Unauthenticated,
    responses,
)
from app.kit.types import Name
from tests.harness.api import assert_problem

# pragma: allowlist nextline secret - a planted string errors must not echo
SECRET = "database password is hunter2"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int


class Labels(BaseModel):
    name: Name
    sizes: list[int] = []
    code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("No such pet.")

    @app.get("/taken")
    async def taken() -> None:
        raise Conflict("That microchip is already registered.")

    @app.get("/anonymous")
    async def anonymous() -> None:
        raise Unauthenticated("Log in.")

    @app.get("/refused")
    async def refused() -> None:
        # Raised as FastAPI's own HTTPException (as a dependency of a library might): its
        # detail is kept, as a Problem's is.
        raise HTTPException(403, "Not yours.")

    @app.post("/things")
    async def things(body: Body) -> dict[str, int]:
        return {"count": body.count}

    @app.post("/labels")
    async def labels(body: Labels) -> None:
        return None

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "Short and stout.", headers={"X-Kettle": "on"})

    @app.get("/challenge")
    async def challenge() -> None:
        raise HTTPException(401, "Log in.", headers={"X-Why": "expired"})

    @app.get("/long/{tail:path}")
    async def long(tail: str) -> None:
        raise Conflict(tail)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    """The shared problem assertion, and the ``instance`` these handlers fill in."""
    body = assert_problem(response, status, slug)
    assert body["instance"] == response.request.url.path
    return body


@pytest.mark.parametrize(
    ("path", "status", "slug", "detail"),
    [
        ("/missing", 404, "not-found", "No such pet."),
        ("/taken", 409, "conflict", "That microchip is already registered."),
        ("/anonymous", 401, "unauthenticated", "Log in."),
        ("/refused", 403, "forbidden", "Not yours."),
    ],
)
async def test_raised_problem(
    client: httpx.AsyncClient, path: str, status: int, slug: str, detail: str
) -> None:
    response = await client.get(path)
    assert _problem(response, status, slug)["detail"] == detail


async def test_unauthenticated_challenges_for_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/anonymous")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("payload", "loc", "error_type"),
    [
        ({"count": "many"}, ["body", "count"], "int_parsing"),
        ({}, ["body", "count"], "missing"),
        ({"count": 1, "extra": 2}, ["body", "extra"], "extra_forbidden"),
    ],
)
async def test_validation_error_lists_errors(
    client: httpx.AsyncClient, payload: dict[str, object], loc: list[str], error_type: str
) -> None:
    body = _problem(await client.post("/things", json=payload), 422, "validation-error")
    assert body["title"] == InvalidInput.title
    assert body["detail"] == "See errors for the fields at fault."
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {"loc": loc, "msg": errors[0]["msg"], "type": error_type} in errors
    assert all(set(e) == {"loc", "msg", "type"} and e["msg"] for e in errors)


async def test_valid_body_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"count": 3})
    assert response.status_code == 200
    assert response.json() == {"count": 3}


async def test_unknown_route(client: httpx.AsyncClient) -> None:
    _problem(await client.get("/nowhere"), 404, "not-found")


async def test_wrong_method(client: httpx.AsyncClient) -> None:
    response = await client.delete("/missing")
    _problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["allow"]


async def test_unexpected_error_is_a_500_that_leaks_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    body = _problem(response, 500, "internal-error")
    assert SECRET not in response.text
    assert "RuntimeError" not in response.text
    assert body["title"] == "Internal server error"


def test_responses_helper() -> None:
    entries = responses(NotFound, Conflict)
    assert set(entries) == {404, 409}
    for entry in entries.values():
        assert entry["description"]
        assert entry["content"] == {
            MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}
        }
    assert entries[404]["description"] == NotFound.title


def test_responses_merges_problems_of_one_status() -> None:
    entries = responses(Unauthenticated, InvalidCredentials)
    assert list(entries) == [401]
    assert entries[401]["description"] == "Authentication required / Invalid credentials"


async def test_a_pattern_that_stands_for_a_rule_is_named_by_the_rule(
    client: httpx.AsyncClient,
) -> None:
    body = _problem(
        await client.post("/labels", json={"name": "  ", "code": "x"}), 422, "validation-error"
    )
    by_field = {tuple(error["loc"]): error for error in body["errors"]}
    assert by_field["body", "name"] == {
        "loc": ["body", "name"],
        "msg": "must not be blank or contain the NUL character",
        "type": "string_pattern_mismatch",
    }
    # Any other pattern is pydantic's own message.
    assert by_field["body", "code"]["msg"] == "String should match pattern '^[A-Z]{3}$'"


@pytest.mark.parametrize(("method", "path"), [("GET", "/nowhere"), ("DELETE", "/missing")])
async def test_an_unknown_route_or_method_says_no_more_than_its_title(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    body = (await client.request(method, path)).json()
    assert "detail" not in body
    assert body["title"] in ("Not found", "Method not allowed")


async def test_an_http_exception_keeps_its_status_detail_and_headers(
    client: httpx.AsyncClient,
) -> None:
    teapot = await client.get("/teapot")
    body = _problem(teapot, 418, "internal-error")
    assert body["detail"] == "Short and stout."
    assert teapot.headers["x-kettle"] == "on"
    challenge = await client.get("/challenge")
    assert _problem(challenge, 401, "unauthenticated")["detail"] == "Log in."
    # Its own headers beside the problem's challenge.
    assert challenge.headers["www-authenticate"] == 'Bearer realm="vetify"'
    assert challenge.headers["x-why"] == "expired"


@pytest.mark.parametrize("length", [problems.TEXT_MAX, problems.TEXT_MAX + 1, 5000])
async def test_what_a_request_put_in_a_problem_is_cut_to_its_limit(
    client: httpx.AsyncClient, length: int
) -> None:
    tail = "x" * length
    body = (await client.get(f"/long/{tail}")).json()
    if length <= problems.TEXT_MAX:
        assert body["detail"] == tail
    else:
        assert body["detail"] == "x" * (problems.TEXT_MAX - 1) + "…"
    instance = f"/long/{tail}"
    assert body["instance"] == instance[: problems.TEXT_MAX - 1] + "…"


async def test_an_error_in_a_list_is_located_by_its_index(client: httpx.AsyncClient) -> None:
    response = await client.post("/labels", json={"name": "Rex", "code": "ABC", "sizes": [1, "x"]})
    errors = _problem(response, 422, "validation-error")["errors"]
    assert [error["loc"] for error in errors] == [["body", "sizes", 1]]


def test_a_problem_reads_as_its_detail_or_else_its_title() -> None:
    assert str(NotFound("No such pet.")) == "No such pet."
    assert str(NotFound()) == "Not found"


def test_a_read_only_clinic_is_told_how_to_pay() -> None:
    problem = problems.PaymentRequired()
    assert (problem.status, problem.type_uri()) == (402, problems.PROBLEM_BASE + "payment-required")
    assert problem.detail == (
        "This clinic is read-only until it pays: its trial ended, or its subscription was"
        " cancelled or is unpaid past the grace period. Reads and exports still work. An owner"
        " or admin can pay at /api/v1/billing (POST /api/v1/billing/checkout, or"
        " /api/v1/billing/portal)."
    )
    assert problem.headers == {"Link": '</api/v1/billing>; rel="payment"'}
