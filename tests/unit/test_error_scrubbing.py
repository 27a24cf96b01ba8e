"""What an error report may carry (app/observability/errors.py, ADR 0024): ``before_send`` on an
event shaped as sentry-sdk makes one, field by field. The live path (a fake ingest decoding real
envelopes) is tests/integration/test_error_reports.py."""

from __future__ import annotations

import uuid
from typing import Any

from app.kit import context
from app.kit.logs import REDACTED
from app.observability.errors import scrub_breadcrumb, scrub_event

EMAIL = "ana.silva@example.com"
PHONE = "+351 912 345 678"
TOKEN = "vtk_" + "a1B2" * 8  # pragma: allowlist secret - made up for the test


def event(**fields: Any) -> dict[str, Any]:
    return {
        "level": "error",
        "extra": {"task_kwargs": {"email": EMAIL}},
        "modules": {"fastapi": "0.121"},
        **fields,
    }


def test_the_context_becomes_tags_and_the_user_is_an_id_alone() -> None:
    clinic, user = uuid.uuid4(), uuid.uuid4()
    bound = context.Context(request_id="req-1", clinic_id=clinic, user_id=user, route="/x/{id}")
    with context.bound(bound):
        sent = scrub_event(event(user={"id": "other", "email": EMAIL, "ip_address": "1.2.3.4"}), {})
    assert sent["tags"] == {"request_id": "req-1", "clinic_id": str(clinic), "route": "/x/{id}"}
    assert sent["user"] == {"id": str(user)}
    assert "extra" not in sent
    assert "modules" not in sent


def test_a_request_no_one_is_logged_in_to_names_no_user() -> None:
    """An error before authentication (a log-in, a webhook): tags, and no user at all, not even
    the one the SDK guessed from the request."""
    bound = context.Context(request_id="req-2", route="/api/v1/auth/login")
    with context.bound(bound):
        sent = scrub_event(event(user={"ip_address": "1.2.3.4", "email": EMAIL}), {})
    assert sent["tags"] == {"request_id": "req-2", "route": "/api/v1/auth/login"}
    assert sent["user"] == {}


def test_without_a_context_the_transaction_is_the_route_and_a_user_without_id_is_dropped() -> None:
    sent = scrub_event(event(transaction="/api/v1/pets/{pet_id}", user={"email": EMAIL}), {})
    assert sent["tags"] == {"route": "/api/v1/pets/{pet_id}"}
    assert sent["user"] == {}
    # A transaction that is not a path (a job's task name) is no route.
    assert "tags" not in scrub_event(event(transaction="auth.mail_password_reset"), {})


def test_the_request_keeps_its_shape_but_not_its_credentials_or_what_was_searched() -> None:
    request = {
        "method": "GET",
        "url": f"https://vetify.example/api/v1/customers?q={EMAIL}",
        "query_string": f"q={EMAIL}&limit=5",
        "headers": {"Authorization": f"Bearer {TOKEN}", "Cookie": "s=1", "Accept": "*/*"},
        "cookies": {"s": "1"},
        "data": {"email": EMAIL},
        "env": {"REMOTE_ADDR": "1.2.3.4"},
    }
    sent = scrub_event(event(request=request), {})
    assert sent["request"] == {
        "method": "GET",
        "url": "https://vetify.example/api/v1/customers",
        "query_string": f"q={REDACTED}&limit=5",
        "headers": {"Accept": "*/*"},
    }
    # No query: none is made up.
    bare = scrub_event(
        event(request={**request, "url": "https://vetify.example/x", "query_string": ""}), {}
    )
    assert "query_string" not in bare["request"]


def test_messages_exceptions_and_breadcrumbs_lose_what_looks_personal_or_secret() -> None:
    said = f"no account for {EMAIL} ({PHONE}), Authorization: Bearer {TOKEN}"
    sent = scrub_event(
        event(
            message=said,
            logentry={"message": "no account for %s", "formatted": said, "params": [EMAIL]},
            exception={
                "values": [
                    {
                        "type": "ValueError",
                        "value": said,
                        "stacktrace": {"frames": [{"function": "f", "vars": {"e": EMAIL}}]},
                    }
                ]
            },
            breadcrumbs={"values": [{"message": said, "data": {"email": EMAIL}}]},
        ),
        {},
    )
    text = repr(sent)
    for secret in (EMAIL, PHONE, TOKEN):
        assert secret not in text
    assert sent["logentry"] == {
        "message": f"no account for {REDACTED} ({REDACTED}), Authorization: {REDACTED}"
    }
    [exception] = sent["exception"]["values"]
    assert exception["stacktrace"]["frames"] == [{"function": "f"}]
    assert sent["breadcrumbs"]["values"] == [{"message": sent["message"]}]


def test_a_breadcrumb_keeps_what_is_not_text() -> None:
    assert scrub_breadcrumb({"category": "sql", "message": None, "data": {"p": 1}}) == {
        "category": "sql",
        "message": None,
    }
