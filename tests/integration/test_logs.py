"""What the service logs of real requests and jobs (issue 19, Logs): each line JSON with the
request's id, route template, clinic and user; one access line per request; the request id
kept from a valid X-Request-ID (echoed on the answer and in problem bodies) or made; personal
data redacted; security events with their actor and no email; jobs' lines with their id,
queue, task and Stripe event."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.auth.models import Role
from app.billing.plans import Plan
from app.observability import logs
from app.settings import LogFormat
from fixtures.factories import DEFAULT_PASSWORD
from tests.harness.api import assert_problem, login
from tests.harness.billing import PRICES, deliver, drain
from tests.harness.stripe import events as fake

Lines = Callable[[], list[dict[str, Any]]]
PETS = "/api/v1/pets"
FAILS = "/test-only/fails"


@pytest.fixture
def logged() -> Iterator[Lines]:
    """Every record of the test from INFO, as the service writes it in JSON: each line parsed
    (a line that is not one JSON object fails the test)."""
    buffer = io.StringIO()
    handler = logs.prepare(logging.StreamHandler(buffer), LogFormat.json)
    root = logging.getLogger()
    # On the loggers, not the root: pytest sets the root's level for each phase of a test.
    opened = [logging.getLogger(name) for name in ("vetify", "procrastinate")]
    levels = [logger.level for logger in opened]
    for logger in opened:
        logger.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        for logger, level in zip(opened, levels, strict=True):
            logger.setLevel(level)


def access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "vetify.access"]


def security(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [
        line for line in lines if line["logger"] == "vetify.security" and line.get("event") == event
    ]


async def test_a_line_names_the_request_its_route_template_clinic_and_user(
    client, world, logged: Lines
) -> None:
    clinic = await world.clinic((Role.owner,))
    missing = uuid.uuid4()

    response = await client.get(f"{PETS}/{missing}", headers=clinic.owner.headers)

    body = assert_problem(response, 404, "not-found")
    request_id = response.headers["X-Request-ID"]
    assert body["request_id"] == request_id
    [line] = access(logged())
    assert line["request_id"] == request_id
    assert line["route"] == "/api/v1/pets/{pet_id}"  # the template, never the id sent
    assert line["method"] == "GET"
    assert line["status"] == 404
    assert line["path"] == f"{PETS}/{missing}"
    assert line["clinic_id"] == str(clinic.id)
    assert line["user_id"] == str(clinic.owner.user.id)
    assert "credential_id" in line
    assert line["duration_ms"] >= 0
    assert line["bytes"] == len(response.content)
    for key in ("timestamp", "level", "logger", "message"):
        assert key in line


async def test_a_valid_request_id_is_kept_everywhere_and_an_invalid_one_replaced(
    client, world, logged: Lines
) -> None:
    clinic = await world.clinic((Role.owner,))
    chosen = f"proxy-{uuid.uuid4().hex}:1"
    kept = await client.get(
        f"{PETS}/{uuid.uuid4()}", headers={**clinic.owner.headers, "X-Request-ID": chosen}
    )
    odd = await client.get(
        f"{PETS}/{uuid.uuid4()}",
        headers={**clinic.owner.headers, "X-Request-ID": "two words\tand a tab"},
    )
    too_long = await client.get(PETS, headers={**clinic.owner.headers, "X-Request-ID": "a" * 129})

    assert kept.headers["X-Request-ID"] == chosen
    assert kept.json()["request_id"] == chosen
    for replaced in (odd, too_long):
        made = replaced.headers["X-Request-ID"]
        assert made not in ("two words\tand a tab", "a" * 129)
        assert len(made) == 32
    assert odd.json()["request_id"] == odd.headers["X-Request-ID"]
    lines = access(logged())
    assert [line["request_id"] for line in lines] == [
        chosen,
        odd.headers["X-Request-ID"],
        too_long.headers["X-Request-ID"],
    ]


async def test_one_access_line_per_request_whoever_answers(client, world, logged: Lines) -> None:
    clinic = await world.clinic((Role.owner,))
    answers = [
        await client.get(PETS, headers=clinic.owner.headers),  # the route
        await client.get("/api/v1/no-such-thing"),  # the router: no route
        await client.get(PETS),  # authentication refuses
        # The body limit's middleware, before any route: 413.
        await client.post(PETS, content=b"x" * (2 * 1024 * 1024), headers=clinic.owner.headers),
    ]

    lines = access(logged())
    assert [line["status"] for line in lines] == [200, 404, 401, 413]
    assert [line["request_id"] for line in lines] == [a.headers["X-Request-ID"] for a in answers]
    assert len({line["request_id"] for line in lines}) == 4
    assert lines[0]["route"] == PETS
    assert "route" not in lines[1]  # no template matched; the path says what was asked
    assert lines[1]["path"] == "/api/v1/no-such-thing"
    too_large = answers[3]
    assert too_large.json()["request_id"] == too_large.headers["X-Request-ID"]


@asynccontextmanager
async def failing(app: FastAPI, *, raise_app_exceptions: bool) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` with a route at :data:`FAILS` that raises an unexpected error."""

    async def fails() -> None:
        raise RuntimeError("a defect")

    app.add_api_route(FAILS, fails)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            yield http
    finally:
        app.router.routes.pop()


async def test_an_unexpected_error_is_answered_and_logged_in_the_requests_context(
    app, logged: Lines
) -> None:
    # As a server does: the answer is what the client gets, whatever the app raised after it.
    async with failing(app, raise_app_exceptions=False) as http:
        response = await http.get(FAILS, headers={"X-Request-ID": "req-500"})

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "req-500"
    assert response.json()["request_id"] == "req-500"
    lines = logged()
    [error] = [line for line in lines if line["logger"] == "vetify.errors"]
    assert error["request_id"] == "req-500"
    assert error["route"] == FAILS
    assert "RuntimeError: a defect" in error["exception"]
    [line] = access(lines)
    assert (line["status"], line["request_id"]) == (500, "req-500")


async def test_the_servers_own_report_of_an_error_already_logged_is_not_written_again(
    app, logged: Lines
) -> None:
    async with failing(app, raise_app_exceptions=True) as http:  # it leaves, as to a server
        with pytest.raises(RuntimeError) as raised:
            await http.get(FAILS, headers={"X-Request-ID": "req-once"})
    # What uvicorn does with it (uvicorn/protocols/http/h11_impl.py), outside any context.
    server = logging.getLogger("uvicorn.error")
    server.error("Exception in ASGI application\n", exc_info=raised.value)
    server.error("Exception in ASGI application\n", exc_info=RuntimeError("not logged yet"))

    lines = [line for line in logged() if "exception" in line]
    assert [(line["logger"], line.get("request_id")) for line in lines] == [
        ("vetify.errors", "req-once"),
        ("uvicorn.error", None),  # an error the app did not log is still written
    ]
    assert "not logged yet" in lines[1]["exception"]


async def test_a_search_is_logged_without_what_was_searched(client, world, logged: Lines) -> None:
    clinic = await world.clinic((Role.owner,))
    marker = uuid.uuid4().hex
    response = await client.get(
        "/api/v1/customers",
        params={"q": f"Silva{marker}", "limit": 5},
        headers=clinic.owner.headers,
    )

    assert response.status_code == 200
    lines = logged()
    assert marker not in json.dumps(lines)
    [line] = access(lines)
    assert line["path"] == "/api/v1/customers?q=[redacted]&limit=5"


async def test_log_ins_are_security_events_with_the_actor_and_never_the_email(
    client, world, logged: Lines
) -> None:
    clinic = await world.clinic((Role.owner,))
    email = clinic.owner.user.email

    refused = await login(client, email, "not the password at all")
    accepted = await login(client, email, DEFAULT_PASSWORD)

    assert refused.status_code == 401
    assert accepted.status_code == 200, accepted.text
    lines = logged()
    assert email not in json.dumps(lines)
    [failed] = security(lines, "login_failed")
    assert failed["outcome"] == "refused"
    assert failed["client_ip"] == "127.0.0.1"
    assert failed["level"] == "WARNING"
    assert failed["request_id"] == refused.headers["X-Request-ID"]
    [succeeded] = security(lines, "login_succeeded")
    assert succeeded["user_id"] == str(clinic.owner.user.id)
    assert succeeded["clinic_id"] == str(clinic.id)


async def test_a_refused_permission_is_a_security_event(client, world, logged: Lines) -> None:
    clinic = await world.clinic((Role.owner, Role.receptionist))
    receptionist = clinic.actors[Role.receptionist]

    response = await client.post(
        "/api/v1/staff/invitations",
        json={"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "role": "vet"},
        headers=receptionist.headers,
    )

    assert response.status_code == 403, response.text
    [denied] = security(logged(), "permission_denied")
    assert denied["user_id"] == str(receptionist.user.id)
    assert denied["clinic_id"] == str(clinic.id)
    assert denied["role"] == "receptionist"


async def test_a_jobs_lines_carry_its_id_queue_task_and_stripe_event(
    client, settings, world, stripe, logged: Lines
) -> None:
    clinic = await world.clinic((Role.owner,))
    sub = fake.subscription(
        customer=fake.new_id("cus_"),
        status="active",
        price=PRICES[Plan.starter],
        clinic_id=str(clinic.id),
    )
    stripe.put_subscription(sub)
    event = fake.event("customer.subscription.created", sub)
    forged = await deliver(client, event, secret="whsec_" + "0" * 32)  # pragma: allowlist secret
    delivered = await deliver(client, event)
    assert forged.status_code == 400
    assert delivered.status_code == 200, delivered.text

    await drain(settings)

    lines = logged()
    [refused] = security(lines, "webhook_signature_refused")
    assert refused["client_ip"] == "127.0.0.1"
    in_job = [line for line in lines if line.get("task") == "billing.apply_stripe_event"]
    assert in_job, [line["message"] for line in lines]
    assert all(line["queue"] == "billing" for line in in_job)
    assert all(isinstance(line["job_id"], int) for line in in_job)
    # The event id is known once the task runs: every line of the task's own code has it.
    stripe_lines = [line for line in in_job if line.get("event_id")]
    assert stripe_lines
    assert {line["event_id"] for line in stripe_lines} == {event["id"]}


async def test_api_tokens_made_and_revoked_are_security_events(
    client, world, security_events
) -> None:
    clinic = await world.clinic((Role.owner,))
    made = await client.post(
        "/api/v1/auth/tokens", json={"name": "ci"}, headers=clinic.owner.headers
    )
    assert made.status_code == 201, made.text
    token_id = made.json()["id"]
    revoked = await client.delete(f"/api/v1/auth/tokens/{token_id}", headers=clinic.owner.headers)
    assert revoked.status_code == 204, revoked.text

    said = [(str(event), fields.get("token_id")) for event, fields in security_events]
    assert said == [("token_created", token_id), ("token_revoked", token_id)]
    assert all(f["user_id"] == str(clinic.owner.user.id) for _, f in security_events)
    assert made.json()["token"] not in repr(security_events)
