"""The fake Stripe API: an HTTP server on 127.0.0.1 that the real ``stripe`` SDK talks to
(point its ``base_addresses={"api": fake.base_url}`` at it). Form-encoded requests in, JSON
out, Stripe's error bodies, idempotency keys replayed like Stripe does, every request
recorded, and faults (errors, stalls, dropped connections) to drive the SDK's retries.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.harness.stripe.events import API_VERSION, checkout_session, new_id, official
from tests.harness.stripe.forms import decode_form
from tests.harness.threaded import serve_in_thread


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it (faulted ones included)."""

    method: str
    path: str
    params: dict[str, Any]  # decoded body (POST) or query (GET)
    headers: dict[str, str]  # lower-case names
    idempotency_key: str | None


@dataclass(frozen=True)
class Stored:
    """An object the fake holds, with the decoded params that created it ({} if put)."""

    object: dict[str, Any]
    params: dict[str, Any]


@dataclass
class _Fault:
    kind: Literal["fail", "stall", "drop"]
    remaining: int
    path_prefix: str | None
    status: int = 500
    retry_after: float | None = None
    should_retry: bool | None = None
    seconds: float = 0.0
    processed: bool = False


@dataclass(frozen=True)
class _Saved:
    # An idempotent result: what was asked, and the answer to replay.
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]
    request_id: str


class StripeError(Exception):
    """Raised by an endpoint; becomes Stripe's error body. ``saved``: Stripe keeps it as the
    key's idempotent result (the endpoint ran), unlike a parameter that failed validation."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        saved: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.saved = saved
        error: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            error["code"] = code
        if param is not None:
            error["param"] = param
        self.body = {"error": error}


def _missing(kind: str, id_: str, param: str) -> StripeError:
    return StripeError(404, f"No such {kind}: '{id_}'", code="resource_missing", param=param)


def _required(params: dict[str, Any], name: str) -> Any:
    if name not in params or params[name] == "":
        # Validation fails before the endpoint runs: Stripe saves no idempotent result.
        message = f"Missing required param: {name}."
        raise StripeError(400, message, code="parameter_missing", param=name, saved=False)
    return params[name]


_Answer = tuple[int, dict[str, Any]]
_Endpoint = Callable[["FakeStripe", dict[str, Any], str], _Answer]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stalled handler must never keep the test process alive
    fake: FakeStripe

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The client giving up on a stalled answer (a timeout) is the point of a stall, not an
        # error worth a traceback on stderr.
        pass


class FakeStripe:
    """Stripe's v1 API, the part the billing code uses, on 127.0.0.1 over real HTTP."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._serving = ExitStack()
        self._stopping = threading.Event()
        self._generation = 0
        self.customers: dict[str, Stored] = {}
        self.checkout_sessions: dict[str, Stored] = {}
        self.portal_sessions: dict[str, Stored] = {}
        self.subscriptions: dict[str, Stored] = {}
        self.requests: list[Recorded] = []
        self._idempotent: dict[str, _Saved] = {}
        self._faults: list[_Fault] = []

    # Lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeStripe is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeStripe:
        # Port 0: the kernel picks a free port at bind time, so there is no window in which
        # another process can take it (as there is between free_port() and a later bind).
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._stopping.clear()
        self._server = server
        self._serving.enter_context(serve_in_thread(server, "fake-stripe"))
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled handlers
        self._serving.close()
        self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget objects, requests, idempotent results and pending faults."""
        with self._lock:
            # A handler still stalled from before the reset must not write into the new state.
            self._generation += 1
            for store in (
                self.customers,
                self.checkout_sessions,
                self.portal_sessions,
                self.subscriptions,
                self._idempotent,
            ):
                store.clear()
            self.requests.clear()
            self._faults.clear()

    # What tests put in and read out

    def put_customer(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.customers[obj["id"]] = Stored(obj, {})
        return obj

    def put_subscription(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.subscriptions[obj["id"]] = Stored(obj, {})
        return obj

    def calls(self, method: str, path_prefix: str) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == method.upper() and r.path.startswith(path_prefix)
            ]

    # Faults: each applies to the next `count` requests whose path starts with `path_prefix`
    # (any path if None), in the order they were added.

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        path_prefix: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answer Stripe's error body with ``status`` instead of running the endpoint."""
        self._add(_Fault("fail", count, path_prefix, status, retry_after, should_retry))

    def stall_next(
        self,
        count: int = 1,
        seconds: float = 2.0,
        path_prefix: str | None = None,
        *,
        processed: bool = True,
    ) -> None:
        """Sleep ``seconds`` before answering, so the client's timeout fires first.

        ``processed`` (default): after the sleep the request runs as usual, like a slow Stripe
        that still does the work the client stopped waiting for. With idempotency keys that
        is safe: a retry that got there first has saved the result, and this one replays it.
        """
        self._add(_Fault("stall", count, path_prefix, seconds=seconds, processed=processed))

    def drop_next(
        self, count: int = 1, path_prefix: str | None = None, *, processed: bool = False
    ) -> None:
        """Close the connection without answering. ``processed``: run the request first (the
        answer is lost, the object exists), else it never reaches the endpoint."""
        self._add(_Fault("drop", count, path_prefix, processed=processed))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and path.startswith(fault.path_prefix or ""):
                    fault.remaining -= 1
                    return fault
            return None

    # Request handling (called by _Handler on the server's threads)

    def _record(self, recorded: Recorded) -> int:
        with self._lock:
            self.requests.append(recorded)
            return self._generation

    def _wait(self, seconds: float) -> bool:
        """Sleep, unless stop() comes first; False if the fake stopped meanwhile."""
        return not self._stopping.wait(seconds)

    def _answer(
        self, request: Recorded, generation: int, request_id: str
    ) -> tuple[int, dict[str, Any], str | None]:
        """(status, body, id of the original request if this answer is a replay)."""
        with self._lock:
            if generation != self._generation:
                raise _Gone
            authorization = request.headers.get("authorization", "")
            # pragma: allowlist nextline secret - the prefix of Stripe's test keys, no key
            if not authorization.startswith("Bearer sk_test_"):
                return 401, _auth_error(authorization), None
            key = request.idempotency_key if request.method == "POST" else None
            if key is not None and key in self._idempotent:
                saved = self._idempotent[key]
                if (saved.method, saved.path, saved.params) != (
                    request.method,
                    request.path,
                    request.params,
                ):
                    return 400, _idempotency_mismatch(key), None
                return saved.status, saved.body, saved.request_id
            status, body, saved_ok = self._route(request)
            if key is not None and saved_ok:
                self._idempotent[key] = _Saved(
                    request.method,
                    request.path,
                    request.params,
                    status,
                    body,
                    request_id,
                )
            return status, body, None

    def _route(self, request: Recorded) -> tuple[int, dict[str, Any], bool]:
        for method, pattern, endpoint in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                try:
                    status, body = endpoint(self, request.params, match.groupdict().get("id", ""))
                except StripeError as error:
                    return error.status, error.body, error.saved
                return status, body, True
        message = f"Unrecognized request URL ({request.method}: {request.path})."
        return 404, {"error": {"type": "invalid_request_error", "message": message}}, False

    # Endpoints: each starts from Stripe's example object and sets what the request says.

    def _create_customer(self, params: dict[str, Any], _: str) -> _Answer:
        obj = official("customer")
        obj.update(
            id=new_id("cus_", 14),
            created=int(time.time()),
            email=params.get("email"),
            name=params.get("name"),
            description=params.get("description"),
            metadata=params.get("metadata") or {},
            discount=None,  # the example has one; a new customer does not
            livemode=False,
        )
        self.customers[obj["id"]] = Stored(obj, params)
        return 200, obj

    def _get_customer(self, _: dict[str, Any], id_: str) -> _Answer:
        if id_ not in self.customers:
            raise _missing("customer", id_, "id")
        return 200, self.customers[id_].object

    def _create_checkout_session(self, params: dict[str, Any], _: str) -> _Answer:
        mode = _required(params, "mode")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            raise _missing("customer", customer, "customer")
        obj = checkout_session(
            customer=customer,
            subscription=None,
            client_reference_id=params.get("client_reference_id"),
            status="open",
            mode=mode,
        )
        now = int(time.time())
        obj.update(
            metadata=params.get("metadata") or {},
            success_url=params.get("success_url"),
            cancel_url=params.get("cancel_url"),
            customer_email=params.get("customer_email"),
            expires_at=now + 24 * 3600,
            url=f"{self.base_url}/checkout/{obj['id']}",
        )
        self.checkout_sessions[obj["id"]] = Stored(obj, params)
        return 200, obj

    def _get_checkout_session(self, _: dict[str, Any], id_: str) -> _Answer:
        if id_ not in self.checkout_sessions:
            raise _missing("checkout.session", id_, "session")
        return 200, self.checkout_sessions[id_].object

    def _create_portal_session(self, params: dict[str, Any], _: str) -> _Answer:
        customer = _required(params, "customer")
        if customer not in self.customers:
            raise _missing("customer", customer, "customer")
        obj = official("billing_portal.session")
        obj.update(
            id=new_id("bps_"),
            created=int(time.time()),
            customer=customer,
            return_url=params.get("return_url"),
            flow=None,  # the example shows a deep-link flow; a plain session has none
            livemode=False,
        )
        obj["url"] = f"{self.base_url}/portal/{obj['id']}"
        self.portal_sessions[obj["id"]] = Stored(obj, params)
        return 200, obj

    def _get_subscription(self, _: dict[str, Any], id_: str) -> _Answer:
        if id_ not in self.subscriptions:
            raise _missing("subscription", id_, "id")
        return 200, self.subscriptions[id_].object


_ID = r"(?P<id>[A-Za-z0-9_]+)"
_ROUTES: list[tuple[str, re.Pattern[str], _Endpoint]] = [
    ("POST", re.compile(r"/v1/customers"), FakeStripe._create_customer),
    ("GET", re.compile(rf"/v1/customers/{_ID}"), FakeStripe._get_customer),
    ("POST", re.compile(r"/v1/checkout/sessions"), FakeStripe._create_checkout_session),
    ("GET", re.compile(rf"/v1/checkout/sessions/{_ID}"), FakeStripe._get_checkout_session),
    ("POST", re.compile(r"/v1/billing_portal/sessions"), FakeStripe._create_portal_session),
    ("GET", re.compile(rf"/v1/subscriptions/{_ID}"), FakeStripe._get_subscription),
]


def _auth_error(authorization: str) -> dict[str, Any]:
    message = (
        "Invalid API Key provided."
        if authorization
        else "You did not provide an API key. You need to provide your API key in the "
        "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
    )
    return {"error": {"type": "invalid_request_error", "message": message}}


def _idempotency_mismatch(key: str) -> dict[str, Any]:
    message = (
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request."
    )
    return {"error": {"type": "idempotency_error", "message": message}}


def _fault_error(status: int) -> dict[str, Any]:
    if status == 429:
        # Stripe's error `type` is one of api_error, card_error, idempotency_error,
        # invalid_request_error (its OpenAPI enum, as in the SDK's types); a rate limit is
        # told by the 429 status and code `rate_limit`, which is what the SDK checks.
        message = "Request rate limit exceeded. Learn more about rate limits here."
        return {
            "error": {"type": "invalid_request_error", "code": "rate_limit", "message": message}
        }
    if status >= 500:
        message = "An unknown error occurred (injected by FakeStripe)."
        return {"error": {"type": "api_error", "message": message}}
    return {"error": {"type": "invalid_request_error", "message": f"Injected {status}."}}


class _Gone(Exception):
    """The fake was reset or stopped while this request was stalled: drop it."""


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive, as Stripe's edge speaks it: the SDK's pooled connections get reused,
    # and a dropped connection is then one the client believed was alive.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms wait an answer (tests/harness/threaded.py)
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests; stderr lines would only be noise

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Recorded(
            method=self.command,
            path=url.path,
            params=decode_form(body if self.command == "POST" else url.query),
            headers=headers,
            idempotency_key=headers.get("idempotency-key"),
        )
        generation = fake._record(request)
        request_id = new_id("req_", 14)
        fault = fake._take_fault(url.path)
        try:
            if fault is not None and fault.kind == "fail":
                # A failure in front of the endpoint (Stripe's edge or rate limiter): nothing
                # ran, so nothing is saved under the idempotency key and a retry with the same
                # key runs the endpoint. (A 500 from an endpoint that had begun, Stripe would
                # save and replay; the SDK retries on Stripe-Should-Retry for those.)
                extra = {}
                if fault.retry_after is not None:
                    extra["Retry-After"] = f"{fault.retry_after:g}"
                if fault.should_retry is not None:
                    extra["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
                self._send(fault.status, _fault_error(fault.status), request, request_id, extra)
                return
            if (
                fault is not None
                and fault.kind == "stall"
                and (not fake._wait(fault.seconds) or not fault.processed)
            ):
                self.close_connection = True
                return
            if fault is not None and fault.kind == "drop" and not fault.processed:
                self.close_connection = True
                return
            status, answer, original = fake._answer(request, generation, request_id)
            if fault is not None and fault.kind == "drop":
                self.close_connection = True  # ran, but the answer is lost
                return
            extra = {}
            if original is not None:  # as Stripe marks a replay
                extra = {"Idempotent-Replayed": "true", "Original-Request": original}
            self._send(status, answer, request, request_id, extra)
        except _Gone:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            # The client timed out and went away while we stalled.
            self.close_connection = True

    def _send(
        self,
        status: int,
        body: dict[str, Any],
        request: Recorded,
        request_id: str,
        extra: dict[str, str],
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", request_id)
        self.send_header("Stripe-Version", request.headers.get("stripe-version", API_VERSION))
        if request.idempotency_key is not None and request.method == "POST":
            self.send_header("Idempotency-Key", request.idempotency_key)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def fake_stripe() -> Iterator[FakeStripe]:
    """A started FakeStripe, stopped on exit."""
    with FakeStripe() as fake:
        yield fake
