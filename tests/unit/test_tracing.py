"""Tracing's own rules, without a server: which OTEL_* settings turn it on or are refused, the
service's name, query strings redacted in either semantic convention, and the clinic named on
spans started while a request or job knows it."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.kit import context
from app.kit.logs import REDACTED
from app.observability import tracing


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({}, None),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_TRACES_EXPORTER": " "}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "OTLP", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ],
)
def test_tracing_is_on_only_when_an_exporter_is_named(environ, exporter) -> None:
    assert tracing.exporter_name(environ) == exporter


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
        {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "Set-Cookie"},
    ],
)
def test_what_it_cannot_honour_is_refused(environ) -> None:
    with pytest.raises(tracing.TracingRefused):
        tracing.exporter_name(environ)


def test_the_service_is_vetify_unless_named(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert tracing.resource().attributes["service.name"] == "vetify"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "vetify-eu")
    assert tracing.resource().attributes["service.name"] == "vetify-eu"


@pytest.fixture
def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    made = TracerProvider()
    made.add_span_processor(tracing.ClinicFromContext())
    made.add_span_processor(SimpleSpanProcessor(exporter))
    return made, exporter


def test_query_strings_are_redacted_in_old_and_stable_conventions(provider) -> None:
    made, exporter = provider
    with made.get_tracer("test").start_as_current_span("GET") as span:
        span.set_attributes(
            {
                "http.url": "https://api.example/v1/customers?email=ana@example.com&limit=5",
                "url.full": "https://api.example/v1/customers?q=Ana+Silva",
                "http.target": "/v1/customers?q=Ana",
                "url.query": "q=Ana&limit=5",
                "http.route": "/v1/customers",
            }
        )
        tracing.redact_urls(span)
    [ended] = exporter.get_finished_spans()
    assert dict(ended.attributes or {}) == {
        "http.url": f"https://api.example/v1/customers?email={REDACTED}&limit=5",
        "url.full": f"https://api.example/v1/customers?q={REDACTED}",
        "http.target": f"/v1/customers?q={REDACTED}",
        "url.query": f"q={REDACTED}&limit=5",
        "http.route": "/v1/customers",
    }


def test_spans_started_while_the_clinic_is_known_name_it(provider) -> None:
    made, exporter = provider
    clinic = uuid.uuid4()
    tracer = made.get_tracer("test")
    with tracer.start_as_current_span("before"):
        pass
    with context.bound(context.Context(request_id="r1")):
        with tracer.start_as_current_span("anonymous"):
            pass
        context.update(clinic_id=clinic)
        with tracer.start_as_current_span("authenticated"):
            pass
    named = {
        span.name: (span.attributes or {}).get("clinic.id")
        for span in exporter.get_finished_spans()
    }
    assert named == {"before": None, "anonymous": None, "authenticated": str(clinic)}


async def test_the_http_client_hooks_redact_what_the_client_span_recorded(provider) -> None:
    made, exporter = provider
    tracer = made.get_tracer("test")
    sent = "https://api.stripe.example/v1/customers?email=ana@example.com"
    for hook in (tracing.redact_client_url, tracing.redact_client_url_async):
        with tracer.start_as_current_span("GET") as span:
            span.set_attribute("http.url", sent)
            done = hook(span, None)  # the hooks read only the span
            if done is not None:
                await done
    recorded = [(s.attributes or {})["http.url"] for s in exporter.get_finished_spans()]
    assert recorded == [f"https://api.stripe.example/v1/customers?email={REDACTED}"] * 2
