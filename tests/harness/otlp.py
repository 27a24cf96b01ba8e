"""A local OTLP/HTTP trace receiver: what an OpenTelemetry collector is to a traced `vetify`.

It takes ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` (gzip or not), as a
collector does, decodes it with opentelemetry-proto and keeps each span as a :class:`Received`:
the tests (and the benchmark's traced runs) point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at it.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.harness.threaded import serve_in_thread

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Received:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which) if which else None


def _attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[Received]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return [
        Received(
            name=span.name,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex(),
            kind=span.kind,
            attributes=_attributes(span.attributes),
            resource=_attributes(resources.resource.attributes),
        )
        for resources in request.resource_spans
        for scope in resources.scope_spans
        for span in scope.spans
    ]


class Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Received] = []
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``OTEL_EXPORTER_OTLP_ENDPOINT``: the exporter appends ``/v1/traces``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != PROTOBUF:
            self.send_error(404 if self.path != "/v1/traces" else 415)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        spans = decode(body)
        with self.server.lock:
            self.server.spans.extend(spans)
            self.server.requests += 1
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", PROTOBUF)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the exporter posts every batch: not worth a line each


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A started receiver, stopped on exit."""
    receiver = Receiver()
    with serve_in_thread(receiver, "otlp-receiver"):
        yield receiver
