"""Security events in the audit trail (app/audit/security.py, issue 20): a clinic's in its chain,
the others in ``security_events``, written before the answer leaves, in transactions of their
own (most are refusals, whose request rolls back), never with an email or a secret."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import cli
from app.audit import security
from app.audit.service import verify
from app.auth.models import Role
from app.kit.events import SecurityEvent, security_event
from app.kit.logs import REDACTED
from app.kit.problems import Conflict
from fixtures.factories import DEFAULT_PASSWORD
from tests.harness.api import login
from tests.harness.databases import APP_ROLE
from tests.harness.world import World

TOKENS = "/api/v1/auth/tokens"


async def global_events(engine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT * FROM security_events ORDER BY created_at"))
        return [dict(row) for row in rows.mappings()]


async def clinic_events(engine, clinic_id: uuid.UUID) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT * FROM audit_events WHERE tenant_id = :c ORDER BY seq"), {"c": clinic_id}
        )
        return [dict(row) for row in rows.mappings()]


def of_security(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["change"] == "security"]


async def answer_of(app, endpoint: Callable[[], Awaitable[Any]], request_id: str) -> httpx.Response:
    """``app``'s answer to a POST to ``endpoint``, served at a test-only path for the one request
    (a failure is answered, as a client would see it, not raised)."""
    path = f"/test-only/{request_id}"
    app.add_api_route(path, endpoint, methods=["POST"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            return await http.post(path, headers={"X-Request-ID": request_id})
    finally:
        app.router.routes.pop()


async def holds(engine, clinic_id: uuid.UUID) -> bool:
    async with engine.connect() as connection:
        return (await verify(connection, clinic_id)).broken is None


async def test_a_refused_log_in_is_recorded_outside_any_clinic_though_its_request_rolled_back(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    email = clinic.owner.user.email
    before = len(await global_events(superuser_engine))

    refused = await login(
        client,
        email,
        "not the password",
        headers={"X-Request-ID": "req-login-refused", "User-Agent": "probe/2"},
    )

    assert refused.status_code == 401, refused.text
    [recorded] = (await global_events(superuser_engine))[before:]
    assert (recorded["event"], recorded["outcome"]) == ("login_failed", "refused")
    assert recorded["request_id"] == "req-login-refused"
    assert recorded["user_agent"] == "probe/2"
    assert recorded["client_ip"]  # the test client's address, as the request saw it
    assert email not in json.dumps(recorded, default=str)
    assert "not the password" not in json.dumps(recorded, default=str)
    # An account's failure is no clinic's event.
    assert of_security(await clinic_events(superuser_engine, clinic.id)) == []


async def test_a_log_in_is_an_event_of_the_clinic_logged_into_and_its_chain_holds(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))

    accepted = await login(client, clinic.owner.user.email, DEFAULT_PASSWORD)

    assert accepted.status_code == 200, accepted.text
    [logged_in] = of_security(await clinic_events(superuser_engine, clinic.id))
    assert (logged_in["event"], logged_in["outcome"]) == ("login_succeeded", "succeeded")
    assert logged_in["user_id"] == clinic.owner.user.id
    assert logged_in["credential_id"] is not None
    assert (logged_in["object_type"], logged_in["object_id"]) == ("users", clinic.owner.user.id)
    assert logged_in["fields"] == []
    assert await holds(superuser_engine, clinic.id)


async def test_a_refused_permission_is_recorded_with_what_was_attempted_and_nothing_else(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner, Role.receptionist))
    receptionist = clinic.actors[Role.receptionist]
    before = len(await clinic_events(superuser_engine, clinic.id))

    refused = await client.post(
        "/api/v1/staff/invitations",
        json={"email": f"new-{uuid.uuid4().hex[:8]}@example.com", "role": "vet"},
        headers=receptionist.headers,
    )

    assert refused.status_code == 403, refused.text
    [denied] = (await clinic_events(superuser_engine, clinic.id))[before:]
    assert (denied["change"], denied["event"], denied["outcome"]) == (
        "security",
        "permission_denied",
        "refused",
    )
    assert denied["user_id"] == receptionist.user.id
    assert denied["role"] == "receptionist"
    assert denied["action"] == "staff:manage"
    assert await holds(superuser_engine, clinic.id)


async def test_a_token_made_and_revoked_are_events_beside_the_credentials_changes(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    before = len(await clinic_events(superuser_engine, clinic.id))

    made = await client.post(TOKENS, json={"name": "ci"}, headers=clinic.owner.headers)
    assert made.status_code == 201, made.text
    token_id = uuid.UUID(made.json()["id"])
    revoked = await client.delete(f"{TOKENS}/{token_id}", headers=clinic.owner.headers)
    assert revoked.status_code == 204, revoked.text

    events = (await clinic_events(superuser_engine, clinic.id))[before:]
    about_it = [(e["change"], e["event"]) for e in events if e["object_id"] == token_id]
    # The rows' changes, each followed by what they were for a security's reader.
    assert about_it == [
        ("insert", None),
        ("security", "token_created"),
        ("update", None),
        ("security", "token_revoked"),
    ]
    assert {e["object_type"] for e in events if e["object_id"] == token_id} == {"credentials"}
    assert made.json()["token"] not in json.dumps(events, default=str)
    assert await holds(superuser_engine, clinic.id)


async def test_the_service_may_add_to_the_global_events_but_not_read_change_or_delete_them(
    client, world: World, app_engine, superuser_engine
) -> None:
    await login(client, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "wrong")
    assert await global_events(superuser_engine)

    for statement in (
        "SELECT count(*) FROM security_events",
        "UPDATE security_events SET outcome = 'succeeded'",
        "DELETE FROM security_events",
    ):
        async with app_engine.connect() as connection:
            with pytest.raises(DBAPIError, match="permission denied"):
                await connection.execute(text(statement))
    async with superuser_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="never changed or deleted"):
            await connection.execute(text("DELETE FROM security_events"))


async def test_a_flood_of_refusals_by_the_rate_limiter_is_not_written(world: World) -> None:
    pending: list[security.Raised] = []
    reset = security._pending.set(pending)
    security.listen()
    try:
        security_event(SecurityEvent.rate_limited, outcome="refused", policy="login")
        security_event(SecurityEvent.login_failed, outcome="refused")
    finally:
        security._pending.reset(reset)
    assert [one.event for one in pending] == ["login_failed"]


async def test_when_the_trail_cannot_be_written_the_answer_still_leaves_and_the_failure_is_logged(
    client, superuser_engine, caplog: pytest.LogCaptureFixture
) -> None:
    async with superuser_engine.begin() as connection:
        await connection.execute(text(f"REVOKE INSERT ON security_events FROM {APP_ROLE}"))
    try:
        with caplog.at_level(logging.ERROR, logger="vetify.audit"):
            refused = await login(client, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "wrong")
    finally:
        async with superuser_engine.begin() as connection:
            await connection.execute(text(f"GRANT INSERT ON security_events TO {APP_ROLE}"))

    assert refused.status_code == 401, refused.text
    [failure] = [r for r in caplog.records if r.name == "vetify.audit"]
    assert failure.getMessage() == "security events not recorded in the audit trail"
    assert vars(failure)["events"] == ["login_failed"]
    assert await global_events(superuser_engine) == []


async def test_operators_read_the_events_of_no_clinic_with_vetify_audit_security_events(
    client, cli_env, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    refused = await login(client, stranger, "wrong", headers={"X-Request-ID": "req-cli-1"})
    assert refused.status_code == 401

    await asyncio.to_thread(cli.main, ["audit", "security-events"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [mine] = [line for line in printed if line["request_id"] == "req-cli-1"]
    assert (mine["event"], mine["outcome"]) == ("login_failed", "refused")
    assert stranger not in json.dumps(printed)

    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    await asyncio.to_thread(cli.main, ["audit", "security-events", "--since", future])
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit, match="--since needs its offset"):
        await asyncio.to_thread(cli.main, ["audit", "security-events", "--since", "2026-12-06"])


async def test_an_event_raised_before_the_app_failed_is_recorded_all_the_same(
    app, superuser_engine
) -> None:
    async def fails() -> None:
        security_event(SecurityEvent.webhook_signature_refused, outcome="refused")
        raise RuntimeError("a defect after the event")

    failed = await answer_of(app, fails, "req-failed")

    assert failed.status_code == 500
    [recorded] = [
        e for e in await global_events(superuser_engine) if e["request_id"] == "req-failed"
    ]
    assert (recorded["event"], recorded["outcome"]) == ("webhook_signature_refused", "refused")


def test_what_an_event_names_beyond_its_actor_is_kept_redacted_as_the_logs_are() -> None:
    kept = security.raised(
        SecurityEvent.lockout,
        {"outcome": "locked", "lock_seconds": 900, "email": "someone@example.org"},
    )
    assert kept.details == {"lock_seconds": 900, "email": REDACTED}
    assert kept.row()["details"]["email"] == REDACTED


async def test_a_role_changed_and_a_member_removed_and_back_are_events_of_the_clinic(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner, Role.vet))
    vet = clinic.actors[Role.vet].user.id
    staff = f"/api/v1/staff/{vet}"
    before = len(await clinic_events(superuser_engine, clinic.id))

    for body in ({"role": "technician"}, {"active": False}, {"active": True}):
        changed = await client.patch(staff, json=body, headers=clinic.owner.headers)
        assert changed.status_code == 200, changed.text
    unchanged = await client.patch(staff, json={"role": "technician"}, headers=clinic.owner.headers)
    assert unchanged.status_code == 200, unchanged.text

    events = of_security((await clinic_events(superuser_engine, clinic.id))[before:])
    assert [(e["event"], e["outcome"], e["object_type"], e["object_id"]) for e in events] == [
        ("role_changed", "changed", "users", vet),
        ("member_deactivated", "deactivated", "users", vet),
        ("member_reactivated", "reactivated", "users", vet),
    ]
    assert {e["user_id"] for e in events} == {clinic.owner.user.id}
    assert await holds(superuser_engine, clinic.id)


async def test_what_was_done_stands_only_if_its_request_succeeded_and_a_refusal_always(
    app, superuser_engine
) -> None:
    vet = uuid.uuid4()

    async def done_then_undone() -> None:
        security_event(SecurityEvent.member_deactivated, outcome="deactivated", user_id=vet)
        security_event(SecurityEvent.login_failed, outcome="refused", user_id=vet)
        raise Conflict("rolled back after the events were raised")

    undone = await answer_of(app, done_then_undone, "req-undone")

    assert undone.status_code == 409, undone.text
    mine = [e for e in await global_events(superuser_engine) if e["request_id"] == "req-undone"]
    assert [e["event"] for e in mine] == ["login_failed"]


async def test_what_is_not_a_request_passes_the_middleware_by() -> None:
    seen: list[str] = []

    async def inner(scope, receive, send) -> None:
        seen.append(scope["type"])

    async def nothing() -> dict[str, str]:
        return {}

    async def ignored(message) -> None:
        raise AssertionError("a lifespan sends nothing through the trail")

    await security.SecurityTrail(inner)({"type": "lifespan"}, nothing, ignored)
    assert seen == ["lifespan"]


async def test_a_request_the_rate_limiter_refused_writes_no_event(app, superuser_engine) -> None:
    async def flooded() -> Response:
        security_event(SecurityEvent.login_failed, outcome="refused")
        return Response(status_code=429)

    answer = await answer_of(app, flooded, "req-flood")

    assert answer.status_code == 429
    assert [
        e for e in await global_events(superuser_engine) if e["request_id"] == "req-flood"
    ] == []
