"""What a log line holds: query strings with every value redacted but a page's size and cursor
(issue 16, #12); the JSON and text shapes; the context's fields; personal data redacted."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace

from app.kit import context
from app.kit.logs import CLIENT_LOGGERS, REDACTED, redact_query
from app.observability import logs, requests
from app.settings import LogFormat


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/api/v1/customers?q=Silva&limit=5", "/api/v1/customers?q=[redacted]&limit=5"),
        ("/api/v1/customers?q=ana%40example.com", "/api/v1/customers?q=[redacted]"),
        ("/api/v1/pets?cursor=abc_-1&q=Rex", "/api/v1/pets?cursor=abc_-1&q=[redacted]"),
        ("/api/v1/appointments?day=2030-01-07", "/api/v1/appointments?day=[redacted]"),
        ("/x?ana.silva%40example.com", "/x?[redacted]"),  # a value alone
        ("/x?ana%40example.com=1&=2", "/x?[redacted]=[redacted]&[redacted]=[redacted]"),
        ("/x?q=&&limit=", "/x?q=[redacted]&&limit="),
        ("/health/ready", "/health/ready"),
        ("/x?", "/x?"),
        ("/x?q=who?why", "/x?q=[redacted]"),  # a "?" in the query is the query's
        ("/x?q=a=b", "/x?q=[redacted]"),  # the first "=" ends the name
    ],
)
def test_query_values_are_redacted_but_a_pages_size_and_cursor(target: str, logged: str) -> None:
    assert redact_query(target) == logged


@pytest.fixture
def written() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger whose records go through the service's handler (JSON) into a buffer."""
    buffer = io.StringIO()
    handler = logs.prepare(logging.StreamHandler(buffer), LogFormat.json)
    logger = logging.getLogger(f"vetify.test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer, handler
    logger.removeHandler(handler)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_has_the_time_level_logger_message_and_fields(written) -> None:
    logger, buffer, _ = written
    logger.warning("pets listed: %d", 3, extra={"count": 3, "clinic": uuid.UUID(int=1)})

    [line] = _lines(buffer)
    assert line["level"] == "WARNING"
    assert line["logger"] == logger.name
    assert line["message"] == "pets listed: 3"
    assert line["count"] == 3
    assert line["clinic"] == str(uuid.UUID(int=1))  # what JSON cannot hold, as text
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    assert "T" in stamp


def test_a_line_carries_the_context_of_the_work_under_way(written) -> None:
    logger, buffer, _ = written
    clinic, user = uuid.uuid4(), uuid.uuid4()
    with context.bound(context.Context(request_id="req-1", method="GET")):
        context.update(clinic_id=clinic, user_id=user, route="/api/v1/pets/{pet_id}")
        logger.info("inside")
    logger.info("outside")

    inside, outside = _lines(buffer)
    assert inside["request_id"] == "req-1"
    assert inside["clinic_id"] == str(clinic)
    assert inside["user_id"] == str(user)
    assert inside["route"] == "/api/v1/pets/{pet_id}"
    assert inside["method"] == "GET"
    assert "request_id" not in outside
    assert "clinic_id" not in outside


def test_an_exception_is_in_the_same_json_line(written) -> None:
    logger, buffer, _ = written
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")

    [line] = _lines(buffer)  # one line: a collector keeps the traceback with its record
    assert "ValueError: boom" in str(line["exception"])


@pytest.mark.parametrize(
    "key",
    [
        "email",
        "owner_email",
        "phone",
        "first_name",
        "last_name",
        "name",
        "address_line1",
        "password",
        "new_password",
        "token",
        "access_token",
        "totp_secret",
        "authorization",
        "Cookie",
        "Stripe-Signature",
        "notes",
        "q",
    ],
)
def test_a_personal_or_secret_key_is_redacted_in_extra_fields(written, key: str) -> None:
    logger, buffer, _ = written
    canary = f"canary-{uuid.uuid4().hex}"
    logger.info("something happened", extra={"fields": {key: canary}, "x": 1})

    text = buffer.getvalue()
    assert canary not in text
    assert _lines(buffer)[0]["fields"] == {key: REDACTED}


def test_ids_are_kept_even_of_what_is_secret(written) -> None:
    logger, buffer, _ = written
    kept = {"token_id": "t1", "user_id": "u1", "password_reset_ids": ["r1"]}
    logger.info("revoked", extra={"fields": {**kept, "token": "secret"}, "email_id": "e1"})

    [line] = _lines(buffer)
    assert line["fields"] == {**kept, "token": REDACTED}
    assert line["email_id"] == "e1"


def test_redaction_reaches_nested_values_and_keeps_the_rest(written) -> None:
    logger, buffer, _ = written
    logger.info(
        "job",
        extra={
            "job": {"id": 7, "task_kwargs": {"clinic_id": "c1", "email": "a@example.com"}},
            "headers": [{"authorization": "Bearer abc"}, {"accept": "*/*"}],
            "email": "b@example.com",
        },
    )

    [line] = _lines(buffer)
    assert line["job"] == {"id": 7, "task_kwargs": {"clinic_id": "c1", "email": REDACTED}}
    assert line["headers"] == [{"authorization": REDACTED}, {"accept": "*/*"}]
    assert line["email"] == REDACTED


def test_mapping_arguments_are_redacted(written) -> None:
    logger, buffer, _ = written
    logger.info("login by %(email)s from %(ip)s", {"email": "ana@example.com", "ip": "10.0.0.1"})

    assert _lines(buffer)[0]["message"] == f"login by {REDACTED} from 10.0.0.1"


def test_text_lines_read_as_key_value() -> None:
    buffer = io.StringIO()
    handler = logs.prepare(logging.StreamHandler(buffer), LogFormat.text)
    record = logging.LogRecord("vetify.access", logging.INFO, __file__, 1, "GET / 200", None, None)
    record.status = 200
    record.path = "/x?q=[redacted]"
    record.note_id = "two words"
    with context.bound(context.Context(request_id="abc")):
        handler.handle(record)

    line = buffer.getvalue().rstrip("\n")
    assert " INFO vetify.access: GET / 200  " in line
    assert "status=200" in line
    assert 'path="/x?q=[redacted]"' in line  # quoted: an "=" inside too
    assert 'note_id="two words"' in line  # quoted: a space would end it
    assert "request_id=abc" in line


def test_configure_writes_to_stdout_as_it_is_then(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        handler = logs.configure(LogFormat.json, "WARNING")
        again = logs.configure(LogFormat.json, "INFO")  # replaces, does not add
        assert handler not in root.handlers
        assert again in root.handlers
        logging.getLogger("vetify.test").info("to stdout")
        logging.getLogger("vetify.test").debug("below the level")
    finally:
        root.removeHandler(again)
        root.setLevel(level)

    out = capsys.readouterr().out
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["to stdout"]


def test_the_active_spans_ids_are_on_the_line(written) -> None:
    logger, buffer, _ = written
    span = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=False,
        )
    )
    with trace.use_span(span):
        logger.info("traced")

    [line] = _lines(buffer)
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "b7ad6b7169203331"


def test_the_query_of_a_url_httpx_logs_is_redacted(written) -> None:
    logger, buffer, _ = written
    url = httpx.URL("https://api.stripe.com/v1/customers/search?query=ana%40example.com&limit=3")
    logger.info('HTTP Request: %s %s "%s"', "GET", url, "HTTP/1.1 200 OK")

    assert _lines(buffer)[0]["message"] == (
        "HTTP Request: GET https://api.stripe.com/v1/customers/search?query=[redacted]&limit=3"
        ' "HTTP/1.1 200 OK"'
    )


def test_text_lines_carry_a_traceback_and_a_stack_on_the_lines_after() -> None:
    buffer = io.StringIO()
    logger = logging.getLogger(f"vetify.test.{uuid.uuid4().hex}")
    logger.addHandler(logs.prepare(logging.StreamHandler(buffer), LogFormat.text))
    logger.propagate = False
    try:
        raise KeyError("k")
    except KeyError:
        logger.exception("failed")
    logger.warning("where from", stack_info=True)

    text = buffer.getvalue()
    assert " ERROR " in text
    assert "\nTraceback (most recent call last):" in text
    assert "KeyError: 'k'" in text
    assert "\nStack (most recent call last):" in text


def test_a_json_line_holds_a_stack_when_asked(written) -> None:
    logger, buffer, _ = written
    logger.warning("where from", stack_info=True)

    assert "test_a_json_line_holds_a_stack_when_asked" in str(_lines(buffer)[0]["stack"])


async def test_the_request_context_leaves_other_than_http_alone() -> None:
    seen: list[object] = []

    async def app(scope, receive, send) -> None:
        seen.append(context.current())

    async def nothing() -> dict[str, object]:
        return {}

    async def dropped(message) -> None:
        return None

    await requests.RequestContext(app)({"type": "lifespan"}, nothing, dropped)

    assert seen == [None]  # no request, no context


@pytest.mark.parametrize("to_stderr", [False, True])
def test_a_commands_logs_go_to_stdout_or_for_a_report_on_stdout_to_stderr(
    capsys: pytest.CaptureFixture[str], to_stderr: bool
) -> None:
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    handler = logs.configure(LogFormat.json, "INFO", to_stderr=to_stderr)
    try:
        logging.getLogger("vetify.test").info("where does this go")
    finally:
        root.removeHandler(handler)
        root.setLevel(before[0])
    out, err = capsys.readouterr()
    written, elsewhere = (err, out) if to_stderr else (out, err)
    assert json.loads(written)["message"] == "where does this go"
    assert "where does this go" not in elsewhere


@pytest.fixture
def levels() -> Iterator[None]:
    """The root logger and the clients' loggers as they were."""
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    saved = {name: logging.getLogger(name).level for name in CLIENT_LOGGERS}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    for handler in set(root.handlers) - set(before[1]):
        root.removeHandler(handler)
    root.setLevel(before[0])


@pytest.mark.usefixtures("levels")
def test_a_process_at_debug_makes_no_debug_record_of_a_dependencys_client() -> None:
    """Those clients log what they send (tests/security/test_secret_leaks.py finds it); a
    stricter level set for one of them is kept."""
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("stripe").setLevel(logging.DEBUG)

    logs.configure(LogFormat.json, "DEBUG")

    assert {name: logging.getLogger(name).level for name in CLIENT_LOGGERS} == {
        **dict.fromkeys(CLIENT_LOGGERS, logging.INFO),
        "urllib3": logging.ERROR,
    }
    assert not logging.getLogger("stripe").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("stripe").isEnabledFor(logging.INFO)
