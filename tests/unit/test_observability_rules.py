"""The pure rules of what the service tells an operator: the dependency report's overall
state, the error reports' scrubbing of events that carry no request context, the log format's
default, and the mail counter on a relay that fails."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.kit import context
from app.kit.mail import Mail, Mailer
from app.observability import errors, metrics
from app.observability.dependencies import Finding, Report, Status
from app.settings import Environment, LogFormat, Settings

EMAIL = "ana.silva@example.org"


@pytest.mark.parametrize(
    ("findings", "overall"),
    [
        ({"database": Finding(Status.ok, required=True), "s3": Finding(Status.ok)}, Status.ok),
        (
            {"database": Finding(Status.ok, required=True), "s3": Finding(Status.down)},
            Status.degraded,
        ),
        (
            {"database": Finding(Status.ok, required=True), "queue": Finding(Status.degraded)},
            Status.degraded,
        ),
        (
            {"database": Finding(Status.down, required=True), "s3": Finding(Status.ok)},
            Status.down,
        ),
        ({"smtp": Finding(Status.not_configured)}, Status.ok),
    ],
)
def test_the_report_is_down_only_for_a_required_dependency(
    findings: dict[str, Finding], overall: Status
) -> None:
    assert Report(findings).status is overall


def test_an_event_outside_any_request_keeps_only_what_is_safe() -> None:
    assert context.current() is None
    event: dict[str, Any] = {
        "transaction": "/api/v1/customers/{customer_id}",
        "user": {"email": EMAIL, "ip_address": "203.0.113.9"},
        "extra": {"arguments": {"email": EMAIL}},
        "modules": {"fastapi": "0"},
        "logentry": {"message": f"mail to {EMAIL} failed", "formatted": None},
        "message": f"mail to {EMAIL} failed",
        "breadcrumbs": {"values": [{"message": f"sent to {EMAIL}", "data": {"to": EMAIL}}]},
    }
    scrubbed = errors.scrub_event(event, None)
    assert scrubbed["tags"] == {"route": "/api/v1/customers/{customer_id}"}
    assert scrubbed["user"] == {}  # no id: nothing of the person
    assert "extra" not in scrubbed
    assert "modules" not in scrubbed
    assert EMAIL not in str(scrubbed)
    assert scrubbed["breadcrumbs"]["values"] == [{"message": "sent to [redacted]"}]


def test_an_event_in_a_request_is_tagged_from_its_context() -> None:
    clinic, user = uuid.uuid4(), uuid.uuid4()
    made = context.Context(request_id="r-1", clinic_id=clinic, user_id=user, route="/x/{y}")
    with context.bound(made):
        scrubbed = errors.scrub_event({"user": {"id": "someone else"}}, None)
    assert scrubbed["tags"] == {"request_id": "r-1", "clinic_id": str(clinic), "route": "/x/{y}"}
    assert scrubbed["user"] == {"id": str(user)}


@pytest.mark.parametrize(
    ("env", "chosen", "expected"),
    [
        (Environment.production, None, LogFormat.json),
        (Environment.development, None, LogFormat.text),
        (Environment.test, LogFormat.json, LogFormat.json),
        (Environment.production, LogFormat.text, LogFormat.text),
    ],
)
def test_the_log_format_is_json_in_production_unless_chosen(
    env: Environment, chosen: LogFormat | None, expected: LogFormat
) -> None:
    settings = Settings(env=Environment.test).model_copy(update={"env": env, "log_format": chosen})
    assert settings.logs_as is expected


class _Broken(Mailer):
    async def send(self, mail: Mail) -> bool:
        raise ConnectionRefusedError("the relay is down")


async def test_a_mail_the_relay_refused_is_counted_failed_and_raised_for_the_retry() -> None:
    def failed() -> float:
        metrics.instruments()
        return metrics.REGISTRY.get_sample_value("vetify_mail_total", {"outcome": "failed"}) or 0.0

    before = failed()
    with pytest.raises(ConnectionRefusedError):
        await metrics.send(
            _Broken(Settings(env=Environment.test)), Mail(("a@example.org",), "s", "b")
        )
    assert failed() == before + 1
