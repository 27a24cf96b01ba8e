"""Tracing (ADR 0025): with an in-memory exporter, a request yields its route's server span,
its SQL (placeholders, never values), Redis and Stripe spans, and the clinic; a job it enqueued
runs in the same trace; nothing personal reaches a span. Off unless the OTEL_* variables say,
with nothing patched. And a live `vetify serve` (two forked workers) exports to a real OTLP/HTTP
receiver."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from redis.asyncio import Redis
from sqlalchemy import text

from app import queue
from app.auth.models import Role
from app.billing.intake import APPLY_STRIPE_EVENT
from app.billing.routes import WEBHOOK_PATH
from app.db import session as db_session
from app.kit.logs import REDACTED
from app.main import create_app
from app.observability import tracing
from app.settings import Settings
from fixtures import files
from tests.harness import api, canary
from tests.harness.billing import PRICES, deliver, drain
from tests.harness.live import run_vetify, until
from tests.harness.otlp import otlp_receiver
from tests.harness.plugin import asgi_client, s3_settings, serving
from tests.harness.stripe import events as fake

BILLING = "/api/v1/billing"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test, every span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=tracing.resource())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.start(provider):
        yield exporter


@asynccontextmanager
async def traced_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An app made while tracing is on (the harness's cached apps were made without it)."""
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        yield client


def server_span(finished: Sequence[ReadableSpan], method: str, route: str) -> ReadableSpan:
    [found] = [
        span
        for span in finished
        if span.kind is trace.SpanKind.SERVER and span.name == f"{method} {route}"
    ]
    assert (found.attributes or {}).get("http.route") == route
    return found


def in_trace(finished: Sequence[ReadableSpan], of: ReadableSpan) -> list[ReadableSpan]:
    assert of.context is not None
    return [s for s in finished if s.context and s.context.trace_id == of.context.trace_id]


def everything_said(finished: Sequence[ReadableSpan]) -> str:
    """Every span's name, attributes and events, as one text to search."""
    return json.dumps(
        [
            [
                span.name,
                dict(span.attributes or {}),
                [dict(e.attributes or {}) for e in span.events],
            ]
            for span in finished
        ],
        default=str,
    )


async def test_a_request_is_traced_with_route_clinic_sql_and_redis_and_nothing_personal(
    spans, settings, world
) -> None:
    clinic = await world.clinic((Role.owner,))
    # A pet owner whose name, e-mail and phone are found nowhere else.
    name = f"Canary{secrets.token_hex(6)}"
    email = f"{name.lower()}@example.com"
    phone = f"+3519{secrets.randbelow(10**8):08d}"
    async with traced_app(settings) as client:
        created = await client.post(
            "/api/v1/customers",
            json={"first_name": name, "last_name": name, "email": email, "phone": phone},
            headers=clinic.owner.headers,
        )
        assert created.status_code == 201, created.text
        found = await client.get(
            "/api/v1/customers", params={"q": name, "limit": 5}, headers=clinic.owner.headers
        )
        assert found.status_code == 200, found.text
        assert [c["first_name"] for c in found.json()["items"]] == [name]
    finished = spans.get_finished_spans()

    search = server_span(finished, "GET", "/api/v1/customers")
    assert search.attributes is not None
    assert search.attributes["clinic.id"] == str(clinic.id)
    url = str(search.attributes.get("http.url") or search.attributes["url.full"])
    assert url.endswith(f"/api/v1/customers?q={REDACTED}&limit=5")  # its shape stays readable

    sql = [s for s in in_trace(finished, search) if (s.attributes or {}).get("db.system")]
    statements = [str((s.attributes or {}).get("db.statement", "")) for s in sql]
    assert any("FROM customers" in statement for statement in statements), statements
    assert any("$1" in statement for statement in statements)  # placeholders, not values
    assert {(s.attributes or {}).get("db.system") for s in sql} >= {"postgresql", "redis"}
    # Spans started once the caller was known name the clinic (from app.kit.context, when the
    # request context is bound; from the server span's tag otherwise).
    assert all(s.parent is not None for s in sql)

    said = everything_said(finished)
    for secret in (name, name.lower(), phone, phone[1:], clinic.owner.token, *canary.ALL):
        assert secret not in said, "personal data or a secret in a span"


class Counted(ParentBased):
    """The SDK's parent-based sampler, sampling no root (a request without a sampled
    ``traceparent``), that notes the spans it is asked about: their names, and whether they
    would have had a parent."""

    def __init__(self) -> None:
        super().__init__(root=ALWAYS_OFF)
        self.asked: list[tuple[str, bool]] = []

    def should_sample(self, parent_context, trace_id, name, *args, **kwargs):
        parent = trace.get_current_span(parent_context).get_span_context()
        self.asked.append((name, parent.is_valid))
        return super().should_sample(parent_context, trace_id, name, *args, **kwargs)


async def test_under_a_request_not_sampled_nothing_is_instrumented_and_its_job_is_not_traced(
    settings, world
) -> None:
    clinic = await world.clinic((Role.owner,))
    sampler, exporter = Counted(), InMemorySpanExporter()
    provider = TracerProvider(resource=tracing.resource(), sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sampled = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
    with tracing.start(provider):
        async with traced_app(settings) as client:
            for extra in ({}, sampled):
                sampler.asked.clear()
                listed = await client.get("/api/v1/pets", headers={**clinic.owner.headers, **extra})
                assert listed.status_code == 200, listed.text
                if not extra:
                    unsampled = list(sampler.asked)
            signed_up = await api.signup(client)  # not sampled: enqueues its mail jobs
            assert signed_up.status_code == 201, signed_up.text
            sampler.asked.clear()
            await drain(settings)
    # Not sampled: the request's span alone was asked about (by tracing.SampledFirst, then by
    # the SDK making the span that records nothing); no SQL or Redis span was even asked.
    assert unsampled == [("GET", False)] * 2  # named by its method: its route is not looked up
    finished = exporter.get_finished_spans()
    # Sampled (its caller's traceparent said so): the same request's SQL and Redis are traced.
    request = server_span(finished, "GET", "/api/v1/pets")
    systems = {(s.attributes or {}).get("db.system") for s in in_trace(finished, request)}
    assert {"postgresql", "redis"} <= systems
    # The jobs of the unsampled sign-up ran untraced (children of its trace), and nothing
    # under them was asked: the only other spans are the worker's own statements, roots.
    jobs = [(name, under) for name, under in sampler.asked if name.startswith("job ")]
    assert jobs, "the sign-up's jobs ran"
    assert all(under for _, under in jobs)
    assert not [under for name, under in sampler.asked if under and not name.startswith("job ")]
    assert not [s for s in exporter.get_finished_spans() if s.name.startswith("job ")]


async def test_what_is_not_a_request_passes_the_sampler_by(settings) -> None:
    """The app's lifespan goes through the middleware too (ASGI's ``lifespan`` scope): it
    starts and stops, and no span is asked for."""
    sampler = Counted()
    with tracing.start(TracerProvider(resource=tracing.resource(), sampler=sampler)):
        app = create_app(settings)
        said = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        answered: list[str] = []

        async def receive() -> dict[str, str]:
            return said.pop(0)

        async def send(message) -> None:
            answered.append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert answered == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert sampler.asked == []


class HalfByTraceId(ParentBased):
    """The SDK's parent-based sampler keeping half the roots, by their trace id; it notes each
    request's trace id and the decisions taken on it."""

    def __init__(self) -> None:
        super().__init__(root=TraceIdRatioBased(0.5))
        self.roots: dict[int, set[bool]] = {}

    def should_sample(self, parent_context, trace_id, name, *args, **kwargs):
        decided = super().should_sample(parent_context, trace_id, name, *args, **kwargs)
        if name == "GET":  # a request's span (the app's own statements are roots too)
            self.roots.setdefault(trace_id, set()).add(decided.decision.is_sampled())
        return decided


async def test_a_request_is_traced_exactly_when_the_sampler_keeps_its_trace_id(
    settings, world
) -> None:
    """The decision taken before the instrumentation (tracing.SampledFirst) is the one the
    request's span is made on: its trace id, not a second draw (which would trace a quarter
    of requests at a ratio of a half, and a span whose trace the sampler dropped)."""
    clinic = await world.clinic((Role.owner,))
    sampler, exporter = HalfByTraceId(), InMemorySpanExporter()
    provider = TracerProvider(resource=tracing.resource(), sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.start(provider):
        async with traced_app(settings) as client:
            for _ in range(24):
                listed = await client.get("/api/v1/pets", headers=clinic.owner.headers)
                assert listed.status_code == 200, listed.text
    assert len(sampler.roots) == 24  # a trace id each
    assert all(len(decided) == 1 for decided in sampler.roots.values())  # asked again: the same
    kept = {trace_id for trace_id, decided in sampler.roots.items() if decided == {True}}
    traced = {
        s.context.trace_id
        for s in exporter.get_finished_spans()
        if s.kind is trace.SpanKind.SERVER and s.context is not None
    }
    assert traced == kept
    assert 0 < len(kept) < 24  # each way at least once: 2 in 2**24 runs fail here


async def test_a_job_continues_the_trace_of_the_request_that_enqueued_it(
    spans, settings, world, stripe
) -> None:
    clinic = await world.clinic((Role.owner,))
    sub = fake.subscription(
        customer=fake.new_id("cus_"),
        status="active",
        price=next(iter(PRICES.values())),
        clinic_id=str(clinic.id),
    )
    stripe.put_subscription(sub)
    async with traced_app(settings) as client:
        delivered = await deliver(client, fake.event("customer.subscription.created", sub))
        assert delivered.status_code == 200, delivered.text
        await drain(settings)
    finished = spans.get_finished_spans()

    webhook = server_span(finished, "POST", WEBHOOK_PATH)
    [job] = [span for span in finished if span.name == f"job {APPLY_STRIPE_EVENT}"]
    assert job.context is not None
    assert webhook.context is not None
    assert job.context.trace_id == webhook.context.trace_id
    assert job.parent is not None
    assert job.parent.span_id == webhook.context.span_id
    assert job.kind is trace.SpanKind.CONSUMER
    # The job's own work is its children: the Stripe call it makes, and its SQL.
    children = [s for s in finished if s.parent and s.parent.span_id == job.context.span_id]
    [retrieve] = [s for s in children if s.kind is trace.SpanKind.CLIENT and s.name == "GET"]
    url = str(
        (retrieve.attributes or {}).get("http.url") or (retrieve.attributes or {})["url.full"]
    )
    assert url.startswith(stripe.base_url + f"/v1/subscriptions/{sub['id']}")
    assert any((s.attributes or {}).get("db.system") == "postgresql" for s in children)
    said = everything_said(finished)
    for secret in canary.ALL:
        assert secret not in said


async def test_a_stripe_call_in_a_request_is_its_child(spans, settings, world, stripe) -> None:
    clinic = await world.clinic((Role.owner,))
    async with traced_app(settings) as client:
        checkout = await client.post(
            f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
        )
        assert checkout.status_code == 200, checkout.text
    finished = spans.get_finished_spans()
    request = server_span(finished, "POST", f"{BILLING}/checkout")
    assert (request.attributes or {})["clinic.id"] == str(clinic.id)
    posts = [s for s in in_trace(finished, request) if s.kind is trace.SpanKind.CLIENT]
    urls = {
        str((s.attributes or {}).get("http.url") or (s.attributes or {}).get("url.full"))
        for s in posts
    }
    assert f"{stripe.base_url}/v1/customers" in urls
    assert f"{stripe.base_url}/v1/checkout/sessions" in urls
    # The SDK's Authorization header (the API key) is not recorded.
    assert canary.STRIPE_KEY not in everything_said(finished)


async def test_an_s3_call_in_a_request_is_its_child(spans, settings, world, s3) -> None:
    """botocore is instrumented when tracing starts (its instrumentation, which loads botocore,
    is imported only then): storing an attachment in S3 is a client span of the upload."""
    clinic = await world.clinic((Role.vet,))
    vet = clinic.actors[Role.vet]
    record = await world.record(clinic)
    stored_in = s3_settings(settings, s3, f"traced-{secrets.token_hex(6)}")
    async with traced_app(stored_in) as client:
        upload = await client.post(
            f"/api/v1/medical-records/{record.id}/attachments",
            files={"file": ("x-ray.png", files.PNG, "image/png")},
            headers=vet.headers,
        )
        assert upload.status_code == 201, upload.text
    finished = spans.get_finished_spans()
    request = server_span(finished, "POST", "/api/v1/medical-records/{record_id}/attachments")
    calls = {
        ((s.attributes or {}).get("rpc.service"), (s.attributes or {}).get("rpc.method"))
        for s in in_trace(finished, request)
        if s.kind is trace.SpanKind.CLIENT
    }
    assert ("S3", "PutObject") in calls
    said = everything_said(finished)
    assert not [secret for secret in canary.ALL if secret in said]


async def test_off_by_default_nothing_is_set_up_or_patched_and_jobs_carry_no_trace(
    client, settings, superuser_engine
) -> None:
    with tracing.traced({}) as nothing:
        assert nothing is None
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not hasattr(httpx.AsyncHTTPTransport.handle_async_request, "__wrapped__")
    assert not hasattr(Redis.execute_command, "__wrapped__")
    assert db_session.engine_hooks == []
    assert not getattr(client._transport.app, "_is_instrumented_by_opentelemetry", False)
    signed_up = await api.signup(client)
    assert signed_up.status_code == 201, signed_up.text
    async with superuser_engine.connect() as connection:
        args = (await connection.scalars(text("SELECT args FROM procrastinate_jobs"))).all()
    assert args, "signup enqueues its jobs"
    assert all(queue.TRACE_ARGUMENT not in stored for stored in args)


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=zipkin: use one of none, otlp"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: only http/protobuf",
        ),
        (
            {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "Authorization"},
            "header capture is refused",
        ),
    ],
)
def test_tracing_settings_it_cannot_honour_refuse_to_start_in_one_line(variables, said) -> None:
    ran = run_vetify("worker", VETIFY_DATABASE_URL="postgresql+asyncpg://nowhere/x", **variables)
    assert ran.returncode == 1
    assert said in ran.stderr
    assert "Traceback" not in ran.stderr


def test_a_live_server_with_forked_workers_exports_to_an_otlp_receiver(
    postgres_server, redis_server
) -> None:
    with (
        otlp_receiver() as receiver,
        serving(
            postgres_server,
            redis_server,
            VETIFY_WORKERS="2",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        ) as live,
    ):
        token = live.demo_token("tracing")
        authorized = {"Authorization": f"Bearer {token}"}
        searched_for = f"Canary{secrets.token_hex(6)}"
        for _ in range(6):  # the kernel hands connections to either worker
            with httpx.Client(base_url=live.url, headers=authorized) as http:
                assert http.get("/api/v1/pets").status_code == 200
                found = http.get("/api/v1/customers", params={"q": searched_for})
                assert found.status_code == 200, found.text

        def traced_lists() -> list:
            return [
                span
                for span in receiver.received()
                if span.attributes.get("http.route") == "/api/v1/pets"
            ]

        [first, *_] = until("the pets list's spans arrive", traced_lists, within=30)
        assert first.resource["service.name"] == "vetify"
        assert first.kind == 2  # SERVER
        assert "clinic.id" in first.attributes
        assert until(
            "its SQL arrives",
            lambda: [
                s
                for s in receiver.received()
                if s.trace_id == first.trace_id and s.attributes.get("db.system") == "postgresql"
            ],
        )

        def said() -> str:
            return json.dumps([s.attributes for s in receiver.received()])

        until("the searches' spans arrive, redacted", lambda: f"q={REDACTED}" in said())
        assert token not in said()
        assert searched_for not in said()
