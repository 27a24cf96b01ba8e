"""Secrets never leave the process: not in responses (bodies, headers, the OpenAPI document),
not in logs, not when the database or Redis fails.

The harness's canaries (tests/harness/canary.py) are in every Settings of this stage, and every
log record, every response through the harness clients and every row a test leaves in its
database is searched for them: the whole stage fails on a single finding. These tests make the
paths most likely to leak run, and check that the watch is really on.
"""

from __future__ import annotations

import json
import logging
import uuid

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.auth.models import Role
from app.db.embedded import free_port
from app.main import create_app
from app.settings import Settings
from fixtures import files
from tests.harness import canary, databases
from tests.harness.api import PROBLEM_JSON, SIGNUP_PASSWORD, login, signup
from tests.harness.mail import VERIFICATION, mailed_token
from tests.harness.plugin import ROOT, asgi_client, drop_searched, s3_settings
from tests.harness.s3 import S3Server
from tests.harness.services import PostgresServer
from tests.harness.smtp import Relay
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import World


def test_every_secret_setting_carries_a_canary(settings: Settings) -> None:
    """Otherwise the watch would search for strings the app never held. A secret setting
    added later fails here until the harness (tests/harness/plugin.py, ``_settings``) gives it
    a value containing one of ``canary.WATCH.canaries`` (add one there if it needs a format)."""
    secret_fields = [
        name
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    ]
    assert secret_fields
    uncovered = []
    for name in secret_fields:
        value = getattr(settings, name)
        held = value.get_secret_value() if value is not None else ""
        if not any(secret in held for secret in canary.WATCH.canaries):
            uncovered.append(name)
    assert uncovered == [], f"harness Settings without a canary secret: {uncovered}"


def test_the_watch_is_on_for_every_logger() -> None:
    before = len(canary.WATCH.leaks)
    for name in ("asyncpg", "uvicorn.error", "vetify"):
        logging.getLogger(name).debug("planted: %s", canary.ROLE_PASSWORD)
    # SQLAlchemy's statements and their parameters (its result rows: the next test).
    logging.getLogger("sqlalchemy.engine.Engine").info("planted: %s", canary.ROLE_PASSWORD)
    assert len(canary.WATCH.leaks) == before + 4
    del canary.WATCH.leaks[before:]  # planted by this test, not leaked by the app


async def test_the_watch_searches_every_row_a_test_leaves(postgres_server: PostgresServer) -> None:
    """What a query could read back is searched where it is kept: a secret in any column of any
    table is found as the test's database is dropped (``drop_searched``, the teardown of
    ``database``, ``module_database`` and ``empty_database``), naming the table."""
    planted = await databases.clone(postgres_server, prefix="planted")
    # Through asyncpg, which logs no parameters: SQLAlchemy's log would show the plant itself.
    connection = await asyncpg.connect(planted.superuser_url.replace("+asyncpg", ""))
    try:
        await connection.execute("CREATE TABLE public.planted (id int, notes text)")
        await connection.execute(
            "INSERT INTO public.planted VALUES (1, 'ok'), (2, $1)", f"key={canary.STRIPE_KEY};"
        )
    finally:
        await connection.close()
    before = len(canary.WATCH.leaks)
    await drop_searched(planted)
    found = canary.WATCH.leaks[before:]
    del canary.WATCH.leaks[before:]  # planted by this test, not leaked by the app
    assert found == [f"{canary.WATCH.where}: a secret in a row of public.planted"]
    assert planted.name not in await databases.names(postgres_server), "dropped after"


def test_a_leak_in_any_worker_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages run a worker per core (pytest-xdist), and a worker's exit status is not the
    run's: the plugin hands each worker's findings to the controller, which fails the run."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(
        test_planted="""
        import logging

        import pytest

        from tests.harness import canary

        @pytest.mark.parametrize("n", range(6))
        def test_plant(n):
            if n == 4:
                logging.getLogger("vetify").warning("planted %s", canary.ROLE_PASSWORD)
        """
    )
    result = pytester.runpytest_subprocess(
        *("-p", "tests.harness.plugin", "-p", "no:randomly", "-p", "no:cacheprovider"),
        *("--leak-canary", "--numprocesses", "2"),
    )
    assert result.parseoutcomes()["passed"] == 6
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*1 secret leak(s)*",
            "test_planted.py::test_plant[[]4[]]: secret #1 in log record of vetify (WARNING)",
        ]
    )


async def test_openapi_and_docs_hold_no_secret(client: httpx.AsyncClient, app: FastAPI) -> None:
    inspected = canary.WATCH.inspected
    for path in ("/openapi.json", "/docs", "/health/live", "/health/ready"):
        assert (await client.get(path)).status_code == 200
    assert canary.WATCH.inspected > inspected, "responses are not searched"
    document = json.dumps(app.openapi())
    for secret in canary.ALL:
        assert secret not in document


@pytest.fixture
async def unreachable() -> FastAPI:
    """The app with its database and Redis on ports nobody listens on, URLs full of canaries."""
    settings = Settings(
        _env_file=None,
        database_url=f"postgresql+asyncpg://vetify_app:{canary.ROLE_PASSWORD}"
        f"@127.0.0.1:{free_port()}/vetify",
        redis_url=f"redis://:{canary.REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        db_connect_timeout_seconds=2,
    )
    return create_app(settings)


async def test_failures_to_connect_echo_no_secret(unreachable: FastAPI) -> None:
    async with (
        unreachable.router.lifespan_context(unreachable),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=unreachable),
            base_url="https://testserver",
            event_hooks=canary.WATCH.hooks(),
        ) as client,
    ):
        ready = await client.get("/health/ready")
        logged_in = await login(client, "a@b.example", "x" * 12)
    assert ready.status_code == 503
    assert logged_in.status_code == 503
    for response in (ready, logged_in):
        assert response.headers["content-type"] == PROBLEM_JSON
        for secret in canary.ALL:
            assert secret not in response.text


async def test_the_dependencies_clients_log_no_secret_and_no_personal_data_at_debug(
    settings: Settings, s3: S3Server, stripe: FakeStripe, mailbox: Relay, world: World
) -> None:
    """A service run at ``VETIFY_LOG_LEVEL=DEBUG`` writes what the clients of its dependencies
    log at DEBUG: botocore, the Stripe SDK, the mail relay's client, the HTTP stacks under them
    (which log what they send). An owner whose address is the personal canary signs up (mail
    through the relay), verifies it and checks out (Stripe); a vet stores a file in S3 and reads
    it back. No record of any of it may hold a secret or that address."""
    assert canary.WATCH.logs_watched
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    before = len(canary.WATCH.leaks)
    application = create_app(s3_settings(settings, s3, f"leaks-{uuid.uuid4().hex[:12]}"))
    clinic = await world.clinic((Role.vet,))
    record = await world.record(clinic)
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        signed_up = await signup(http, email=canary.PERSON_EMAIL)
        assert signed_up.status_code == 201, signed_up.text
        assert (await login(http, canary.PERSON_EMAIL, SIGNUP_PASSWORD)).status_code == 200
        token = await mailed_token(settings, mailbox, canary.PERSON_EMAIL, VERIFICATION)
        assert (await http.post("/api/v1/auth/verify-email", json={"token": token})).is_success
        checkout = await http.post("/api/v1/billing/checkout", json={"plan": "starter"})
        assert checkout.status_code == 200, checkout.text
        assert [request.path for request in stripe.requests] != []

        vet = clinic.actors[Role.vet].headers
        stored = await http.post(
            f"/api/v1/medical-records/{record.id}/attachments",
            files={"file": ("x-ray.png", files.PNG, "image/png")},
            headers=vet,
        )
        assert stored.status_code == 201, stored.text
        read = await http.get(f"/api/v1/attachments/{stored.json()['id']}/content", headers=vet)
        assert read.content == files.PNG

    assert canary.WATCH.leaks[before:] == []
