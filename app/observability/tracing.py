"""OpenTelemetry tracing (ADR 0025): configured only by the standard ``OTEL_*`` variables, off
unless ``OTEL_TRACES_EXPORTER`` names an exporter.

Off, nothing here runs: no tracer provider is set and no library is patched, so tracing costs
nothing. On, each process (`vetify serve` and each of its forked workers, `vetify worker`) sets
up its own provider with :func:`traced`, after any fork: the batch exporter's thread does not
survive one. What is traced: each request (the FastAPI instrumentation, named by its route
template), each SQL statement (with its placeholders, never its parameters), each call through
httpx (Stripe), Redis and botocore (S3), and each job, as a child of the request that enqueued
it (the W3C trace context travels in the job: app/queue.py).

What a span may hold: ids and templates. ``clinic.id`` is set where authentication learns the
clinic (:func:`tag_clinic`) and from :mod:`app.kit.context` on every span started after it. URL
query strings (which may search for a name or an e-mail) are redacted as the logs redact them;
header capture, which the instrumentations offer through ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_
HEADERS_*``, is refused, since headers carry cookies, tokens and Stripe's signatures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from fastapi import FastAPI
from opentelemetry import context as trace_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context as TraceContext
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware, asgi_getter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor, RequestInfo
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.util.http import sanitize_method
from procrastinate.jobs import Job
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import queue
from app.db import session as db_session
from app.kit import context
from app.kit.logs import redact_query

SERVICE = "vetify"
"""The service's name unless ``OTEL_SERVICE_NAME`` (or ``OTEL_RESOURCE_ATTRIBUTES``) says."""
CLINIC = "clinic.id"
EXPORTERS = ("otlp", "console")
"""``otlp`` is OTLP over HTTP (protobuf), to ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``."""
REFUSED_VARIABLES = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
"""Attributes holding a URL or a path with its query string (old and stable conventions)."""


class TracingRefused(ValueError):
    """``OTEL_*`` variables this service will not run with; the message names no value but the
    exporter's."""


def exporter_name(environ: Mapping[str, str]) -> str | None:
    """The exporter ``OTEL_TRACES_EXPORTER`` names, None when tracing is off (unset, "none");
    raises :class:`TracingRefused` for what this service does not run with (checked by the
    command before it starts anything, as settings are)."""
    for name in REFUSED_VARIABLES:
        if environ.get(name):
            raise TracingRefused(f"{name}: header capture is refused (headers carry credentials)")
    name = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if name in ("", "none"):
        return None
    if name not in EXPORTERS:
        raise TracingRefused(
            f"OTEL_TRACES_EXPORTER={name}: use one of none, {', '.join(EXPORTERS)}"
        )
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if name == "otlp" and protocol != "http/protobuf":
        raise TracingRefused(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf")
    return name


def resource() -> Resource:
    found = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return found.merge(Resource({SERVICE_NAME: SERVICE}))
    return found


@contextmanager
def traced(environ: Mapping[str, str] = os.environ) -> Iterator[Tracing | None]:
    """Tracing for this process within the block, if ``OTEL_*`` turn it on; its spans are
    flushed on the way out. (The sampler is the SDK's from ``OTEL_TRACES_SAMPLER[_ARG]``.)"""
    name = exporter_name(environ)
    if name is None:
        yield None
        return
    # Each reads its OTEL_EXPORTER_OTLP_* variables itself.
    exporter = OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
    provider = TracerProvider(resource=resource())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with start(provider) as tracing:
        yield tracing


@dataclass
class Tracing:
    """What :func:`start` installed, for :func:`instrument_app` and the queue to use."""

    provider: TracerProvider
    apps: list[FastAPI] = field(default_factory=list)

    def instrument(self, app: FastAPI) -> None:
        app.add_middleware(QuietUnlessSampled)  # the outermost of the app's own: in the span
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            server_request_hook=redact_urls,
            # The ASGI receive and send events as spans of their own: noise, at a cost.
            exclude_spans=["receive", "send"],
        )
        built = app.build_middleware_stack
        tracer = self.provider.get_tracer("vetify.http")

        def named_at_the_route() -> ASGIApp:
            stack = built()
            # The instrumentation names a request's span before it starts by trying every
            # route on it (5% of a request's CPU, sampled or not): named by its method then,
            # and by its route's template once the router has matched (QuietUnlessSampled).
            # And only a request the sampler keeps goes through its middleware (SampledFirst).
            server = getattr(stack, "app", None)
            if isinstance(server, OpenTelemetryMiddleware):
                server.default_span_details = method_alone
                stack.app = SampledFirst(server, tracer, self.provider)  # type: ignore[attr-defined]
            return stack

        app.build_middleware_stack = named_at_the_route  # type: ignore[method-assign]
        self.apps.append(app)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        EngineTracer(  # type: ignore[no-untyped-call]  # untyped library
            self.provider.get_tracer("vetify.sql"),
            engine.sync_engine,
            # The pool's usage gauge goes to OpenTelemetry metrics, which are not set up (the
            # service's metrics are Prometheus'): a no-op meter.
            metrics.NoOpMeterProvider()
            .get_meter("vetify.sql")
            .create_up_down_counter("db.client.connections.usage"),
            enable_commenter=False,  # no trace ids appended to the SQL
        )

    def carrier(self) -> dict[str, str]:
        found: dict[str, str] = {}
        propagate.inject(found)
        return found

    @contextmanager
    def running(self, carrier: dict[str, str], job: Job) -> Iterator[None]:
        parent: TraceContext = propagate.extract(carrier)
        with (
            self.provider.get_tracer("vetify.queue").start_as_current_span(
                f"job {job.task_name}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "procrastinate",
                    "messaging.destination.name": job.queue,
                    "job.id": job.id or 0,
                    "job.task": job.task_name,
                    "job.attempt": job.attempts,
                },
            ) as span,
            unless_sampled(span),
        ):
            yield


_active: Tracing | None = None


@contextmanager
def start(provider: TracerProvider) -> Iterator[Tracing]:
    """Instrument the libraries and the queue for spans to ``provider`` (tests pass one with an
    in-memory exporter), until the block ends."""
    global _active  # the process's one tracing, as the SDK's provider is
    # Before any tracer is made: each takes the provider's id generator as it is then.
    provider.id_generator = StagedIds()
    tracing = Tracing(provider)
    provider.add_span_processor(ClinicFromContext())
    # Its import loads botocore (about 5 MiB of a worker): only where tracing is on, as boto3
    # only where S3 or KMS is configured.
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    HTTPXClientInstrumentor().instrument(
        tracer_provider=provider,
        request_hook=redact_client_url,
        async_request_hook=redact_client_url_async,
    )
    RedisInstrumentor().instrument(tracer_provider=provider)  # commands' arguments are "?"
    BotocoreInstrumentor().instrument(  # type: ignore[no-untyped-call]
        tracer_provider=provider
    )
    db_session.engine_hooks.append(tracing.instrument_engine)
    queue.trace_jobs_with(tracing)
    _active = tracing
    try:
        yield tracing
    finally:
        _active = None
        queue.trace_jobs_with(None)
        db_session.engine_hooks.remove(tracing.instrument_engine)
        EngineTracer.remove_all_event_listeners()  # type: ignore[no-untyped-call]
        BotocoreInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        RedisInstrumentor().uninstrument()
        HTTPXClientInstrumentor().uninstrument()
        for app in tracing.apps:
            FastAPIInstrumentor.uninstrument_app(app)
        provider.shutdown()


def instrument_app(app: FastAPI) -> None:
    """Trace ``app``'s requests, when tracing is on (``create_app`` calls it)."""
    if _active is not None:
        _active.instrument(app)


def unless_sampled(span: trace.Span) -> AbstractContextManager[None]:
    """Within a span that is not sampled, nothing is traced: the instrumentations (SQL,
    Redis, httpx, botocore) skip their work instead of each making a span to throw away, as the
    sampler would (its children follow their parent). What a 10% sample costs the other 90%
    of requests is then one span's start and end (ADR 0025)."""
    return nullcontext() if span.is_recording() else suppress_instrumentation()


def method_alone(scope: Scope) -> tuple[str, dict[str, str]]:
    """A server span's name as it starts: its method (as the instrumentation spells one it
    does not know), and no attributes."""
    method = sanitize_method(str(scope.get("method", "")).strip())
    return ("HTTP" if method in ("_OTHER", "") else method), {}


_staged: ContextVar[int | None] = ContextVar("vetify_staged_trace_id", default=None)


class StagedIds(RandomIdGenerator):
    """The SDK's random ids, except a trace id :class:`SampledFirst` has drawn for a request,
    which the request's span then takes."""

    def generate_trace_id(self) -> int:
        staged = _staged.get()
        if staged is None:
            return super().generate_trace_id()
        _staged.set(None)
        return staged


class SampledFirst:
    """ASGI middleware in front of the instrumentation's (``traced``, whose ``app`` is the rest
    of the stack): the sampler decides on a request before any of the instrumentation's work
    (its attributes, span, wrapped ``send`` and metrics, about a tenth of a request's CPU on
    the pets list, ADR 0025). A request it keeps goes through ``traced``, whose span gets the
    trace id the decision was taken on (the SDK's samplers decide by the parent and the trace
    id alone, so the SDK's second asking agrees). One it drops runs the rest of the stack in
    the span the SDK makes for it, which records nothing but carries the trace (to the logs'
    ``trace_id`` and to its jobs, which then run untraced), with nothing instrumented under
    it (:func:`unless_sampled`)."""

    def __init__(
        self, traced: OpenTelemetryMiddleware, tracer: trace.Tracer, provider: TracerProvider
    ) -> None:
        self.traced = traced
        self.untraced: ASGIApp = traced.app
        self.tracer = tracer
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.traced(scope, receive, send)
            return
        parent = propagate.extract(cast(dict[str, Any], scope), getter=asgi_getter)
        known = trace.get_current_span(parent).get_span_context()
        trace_id = (
            known.trace_id if known.is_valid else self.provider.id_generator.generate_trace_id()
        )
        name = method_alone(scope)[0]
        staged = _staged.set(None if known.is_valid else trace_id)
        try:
            decided = self.provider.sampler.should_sample(
                parent, trace_id, name, trace.SpanKind.SERVER
            )
            if decided.decision is not Decision.DROP:
                await self.traced(scope, receive, send)
                return
            span = self.tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER)
            attached = trace_context.attach(trace.set_span_in_context(span, parent))
            try:
                with unless_sampled(span):
                    await self.untraced(scope, receive, send)
            finally:
                trace_context.detach(attached)
        finally:
            _staged.reset(staged)


class QuietUnlessSampled:
    """ASGI middleware inside the FastAPI instrumentation's server span: the request runs
    under :func:`unless_sampled` of that span, which, when sampled, is named by the template
    of the route that answered (``GET /api/v1/pets/{pet_id}``; the method alone when none
    did), with ``http.route``, as the semantic conventions ask."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return

        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start":  # the span ends with the answer
                _name_by_route(span, scope)
            await send(message)

        try:
            await self.app(scope, receive, naming)
        finally:  # an error, answered further out
            _name_by_route(span, scope)


def _name_by_route(span: trace.Span, scope: Scope) -> None:
    under_way = context.current()  # the route's template: requests.bind_route
    route = under_way.route if under_way is not None else None
    if route is not None and span.is_recording():
        span.update_name(f"{method_alone(scope)[0]} {route}")
        span.set_attribute(HTTP_ROUTE, route)


def tag_clinic(clinic_id: uuid.UUID) -> None:
    """The request's span names the clinic its caller acts in (authentication calls it)."""
    trace.get_current_span().set_attribute(CLINIC, str(clinic_id))


class ClinicFromContext(SpanProcessor):
    """Every span started while a request or job knows its clinic names it."""

    def on_start(self, span: Any, parent_context: TraceContext | None = None) -> None:
        known = context.current()
        if known is not None and known.clinic_id is not None:
            span.set_attribute(CLINIC, str(known.clinic_id))


def redact_urls(span: trace.Span, *_: Any) -> None:
    """Query strings redacted (app/kit/logs.py), wherever an instrumentation recorded one."""
    recorded = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = recorded.get(name)
        if isinstance(value, str):
            span.set_attribute(name, redact_query(value))
    query = recorded.get("url.query")
    if isinstance(query, str):
        span.set_attribute("url.query", redact_query(f"?{query}")[1:])


def redact_client_url(span: trace.Span, request: RequestInfo) -> None:
    redact_urls(span)


async def redact_client_url_async(span: trace.Span, request: RequestInfo) -> None:
    redact_urls(span)
