"""Security events: one record each on ``vetify.security``, the actor from the context, and the
listeners told (a failing one skipped)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from app.kit import context
from app.kit.events import SecurityEvent, security_event, subscribe


def test_an_event_is_a_record_with_its_actor_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vetify.security")
    clinic, user = uuid.uuid4(), uuid.uuid4()
    with context.bound(context.Context(request_id="r1", clinic_id=clinic, user_id=user)):
        security_event(
            SecurityEvent.token_created, outcome="created", token_id="t1", count=2, none=None
        )
        security_event(SecurityEvent.permission_denied, outcome="refused", user_id=uuid.UUID(int=7))

    created, denied = caplog.records
    assert created.levelno == logging.INFO
    assert created.__dict__["event"] == "token_created"
    assert created.__dict__["outcome"] == "created"
    assert created.__dict__["clinic_id"] == str(clinic)
    assert created.__dict__["user_id"] == str(user)
    assert created.__dict__["token_id"] == "t1"
    assert created.__dict__["count"] == 2  # only the actor's ids become strings
    assert created.getMessage() == "security event token_created: created"
    assert "none" not in created.__dict__  # unset fields are left out
    assert denied.levelno == logging.WARNING  # someone was refused
    assert denied.__dict__["user_id"] == str(uuid.UUID(int=7))  # given wins over the context


def test_listeners_hear_each_event_until_they_stop(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[tuple[SecurityEvent, dict[str, Any]]] = []

    def broken(event: SecurityEvent, fields: dict[str, Any]) -> None:
        raise RuntimeError("a listener's defect")

    stop_broken = subscribe(broken)
    stop = subscribe(lambda event, fields: heard.append((event, fields)))
    try:
        security_event(SecurityEvent.rate_limited, outcome="refused", policy="login")
    finally:
        stop_broken()
        stop()
    security_event(SecurityEvent.unlock, outcome="unlocked")

    assert heard == [
        (
            SecurityEvent.rate_limited,
            {"event": "rate_limited", "outcome": "refused", "policy": "login"},
        )
    ]
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "listener failed on rate_limited" in failure.getMessage()
