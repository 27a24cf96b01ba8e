"""Error tracking against a local Sentry ingest (tests/harness/sentry.py): an unexpected failure
in a request or a job is one event, with its tags and stack trace, and nothing personal or
secret anywhere in what was sent; an expected problem (a 4xx) is none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text

from app.auth.mails import MAIL_VERIFICATION
from app.customers import service as customers
from app.observability import errors
from app.queue import enqueue
from app.settings import Settings
from tests.harness import canary
from tests.harness.live import run_vetify
from tests.harness.queue import drain
from tests.harness.sentry import FakeSentry, fake_sentry

# A person no other text contains: each must be absent from every byte Sentry receives.
NAME = f"Zebedee{uuid.uuid4().hex[:8]}"
EMAIL = f"zeb.{uuid.uuid4().hex[:8]}@example.org"
PHONE = "+447700" + str(uuid.uuid4().int)[:7]
PERSONAL = (NAME, EMAIL, PHONE)


@pytest.fixture(scope="module")
def ingest() -> Iterator[FakeSentry]:
    with fake_sentry() as server:
        yield server


@pytest.fixture
def reporting(ingest: FakeSentry, settings: Settings) -> Iterator[FakeSentry]:
    """Errors reported to the fake ingest, as `vetify` configures it from the settings."""
    ingest.reset()
    assert errors.configure(settings.model_copy(update={"sentry_dsn": SecretStr(ingest.dsn)}))
    yield ingest
    errors.close()


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=("203.0.113.9", 50_000), raise_app_exceptions=False
    )
    return httpx.AsyncClient(
        transport=transport, base_url="https://testserver", event_hooks=canary.WATCH.hooks()
    )


def _nothing_secret_in(raw: bytes) -> None:
    for secret in (*PERSONAL, *canary.ALL, "203.0.113.9"):
        assert secret.encode() not in raw, "a secret or personal datum reached Sentry"


async def test_an_unexpected_error_in_a_request_is_one_scrubbed_event_with_its_tags(
    app, world, reporting, monkeypatch
):
    clinic = await world.clinic()
    owner = clinic.owner
    async with _client(app) as client:
        created = await client.post(
            "/api/v1/customers",
            json={"first_name": NAME, "last_name": "Q", "email": EMAIL, "phone": PHONE},
            headers=owner.headers,
        )
        assert created.status_code == 201, created.text

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"injected failure for {EMAIL}")

        monkeypatch.setattr(customers, "to_out", broken)
        failed = await client.get(
            f"/api/v1/customers?q={EMAIL}&limit=5",
            headers={
                **owner.headers,
                "Cookie": f"vetify_session={canary.REDIS_PASSWORD}",
                "X-Request-ID": "req-sentry-1",
            },
        )
    assert failed.status_code == 500
    assert failed.headers["x-request-id"] == "req-sentry-1"
    assert failed.json()["request_id"] == "req-sentry-1"

    events = reporting.wait_for_events(1)
    errors.close()  # flushes: a second event, had there been one, is in too
    events = reporting.events()
    assert len(events) == 1
    event = events[0]
    assert event["level"] == "error"
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["tags"]["clinic_id"] == str(clinic.id)
    assert event["tags"]["route"] == "/api/v1/customers"
    assert event["user"] == {"id": str(owner.user.id)}
    assert event["environment"] == "test"
    assert event["release"].startswith("vetify@")
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    frames = exception["stacktrace"]["frames"]
    assert any(frame["function"] == "broken" for frame in frames)
    assert all("vars" not in frame for frame in frames)
    assert "limit=5" in event["request"]["query_string"]
    _nothing_secret_in(reporting.raw())
    for token in (owner.token, "Bearer"):
        assert token.encode() not in reporting.raw()


async def test_an_expected_problem_is_not_reported(app, world, reporting):
    clinic = await world.clinic()
    async with _client(app) as client:
        owner = clinic.owner.headers
        missing = await client.get(f"/api/v1/customers/{uuid.uuid4()}", headers=owner)
        refused = await client.get("/api/v1/customers")
        invalid = await client.post("/api/v1/customers", json={}, headers=owner)
    assert (missing.status_code, refused.status_code, invalid.status_code) == (404, 401, 422)
    errors.close()
    assert reporting.events() == []


async def test_a_job_that_fails_for_good_is_one_event(settings, world, reporting):
    async with world.session() as session:
        job_id = await enqueue(session, MAIL_VERIFICATION, user_id=EMAIL)
        # Its last try: procrastinate reports an error only once no retry is left.
        await session.execute(
            text("UPDATE procrastinate_jobs SET attempts = 6 WHERE id = :id"), {"id": job_id}
        )

    await drain(settings)

    errors.close()
    events = reporting.events()
    assert len(events) == 1
    (exception,) = events[0]["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["stacktrace"]["frames"]
    assert "mail_email_verification" in events[0]["logentry"]["message"]
    _nothing_secret_in(reporting.raw())


def test_no_dsn_reports_nothing(settings):
    assert errors.configure(settings.model_copy(update={"sentry_dsn": None})) is False


def test_the_release_names_the_commit(settings):
    assert errors.release(settings.model_copy(update={"git_sha": "0123456789abcdef"})).endswith(
        "+0123456789ab"
    )


def test_an_uncaught_error_in_a_command_is_one_event(ingest):
    """A real `vetify` process: the exception reaches ``sys.excepthook`` (here, a database URL
    whose port is not a number, found only when the engine is made)."""
    ingest.reset()
    url = f"postgresql+asyncpg://vetify_app:{canary.ROLE_PASSWORD}@127.0.0.1:notaport/vetify"
    done = run_vetify("check", VETIFY_DATABASE_URL=url, VETIFY_SENTRY_DSN=ingest.dsn)

    assert done.returncode == 1
    assert "ValueError" in done.stderr
    events = ingest.wait_for_events(1)
    assert len(events) == 1
    (exception,) = events[0]["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["mechanism"]["type"] == "excepthook"
    _nothing_secret_in(ingest.raw())
