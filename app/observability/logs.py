"""The one logging setup of every process (`vetify serve` and its workers, `vetify worker`, the
other commands): stdlib logging, so every library's records (uvicorn, procrastinate, SQLAlchemy,
asyncpg) go the same way as ours, to one handler on stdout.

Each record written carries a UTC timestamp, its level, logger and message, the fields of the
request or job under way (:mod:`app.kit.context`: request_id, clinic_id, user_id,
credential_id, method, route; job_id, queue, task, event_id), the trace and span ids when an
OpenTelemetry span is recording, and what the call passed in ``extra``. ``json``: one object a
line, for a collector; ``text``: the same as readable ``key=value``.

Personal data and secrets are redacted before anything is written (:class:`Redact`): a value
under a key in :data:`PERSONAL_KEYS` (or whose name contains one of :data:`PERSONAL_PARTS`), in
``extra`` or in a mapping of arguments, at any depth, becomes ``"[redacted]"``; so does each
query value of a URL httpx logs (app/kit/logs.py says which are kept). Messages are
not parsed: code logs ids, never an email or a name, and the test run's leak watch holds it to
that (tests/harness/canary.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import httpx
from opentelemetry import trace  # the API; spans record once tracing is configured

from app.kit import context
from app.kit.logs import REDACTED, hold_clients_at_info, logged_before, redact_query
from app.queue import ExpectedInOneLine
from app.settings import LogFormat

PERSONAL_KEYS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "owner_name",
        "display_name",
        "address",
        "address_line1",
        "address_line2",
        "street",
        "postcode",
        "notes",
        "note",
        "clinical_notes",
        "diagnosis",
        "treatment",
        "description",
        "authorization",
        "cookie",
        "set_cookie",
        "stripe_signature",
        "totp_code",
        "recovery_code",
        "recovery_codes",
        "q",
    }
)
"""Keys whose value is redacted (compared in lower case, ``-`` read as ``_``): names, postal
addresses, clinical text, credentials in headers, second factors, and a search (``q``), which
holds what was searched for."""
PERSONAL_PARTS = ("email", "phone", "password", "passphrase", "secret", "token", "api_key")
"""A key containing one of these is redacted too: ``owner_email``, ``new_password``,
``access_token``, ``totp_secret``..."""

_RECORD_ATTRIBUTES = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
        "color_message",  # uvicorn's message again, with terminal colours
    }
)
"""What every record has (or repeats); anything else on a record came from ``extra`` (or a
filter)."""


@functools.lru_cache(maxsize=4096)  # asked of each field of every line; the names repeat
def is_personal(key: str) -> bool:
    """Whether a value under ``key`` is redacted (for other reporters: errors, spans). An id
    is not (``token_id``, ``user_id``: the rows' keys, which say what was touched)."""
    folded = key.lower().replace("-", "_")
    if folded in PERSONAL_KEYS:
        return True
    return not folded.endswith(("_id", "_ids")) and any(part in folded for part in PERSONAL_PARTS)


def redacted(value: Any) -> Any:
    """``value`` with what any of its mappings, at any depth, holds under personal keys
    replaced."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_personal(key) else redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redacted(item) for item in value)
    return value


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class Redact(logging.Filter):
    """Personal data and secrets out of a record's ``extra`` fields and mapping arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in extras(record).items():
            setattr(record, key, REDACTED if is_personal(key) else redacted(value))
        if isinstance(record.args, Mapping):
            record.args = redacted(record.args)
        elif isinstance(record.args, tuple):
            # httpx logs each request's URL (Stripe's API, a search by email among them).
            record.args = tuple(
                redact_query(str(arg)) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


class Once(logging.Filter):
    """Drops a record of an exception already logged with its context (app/kit/logs.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not logged_before(exc)


class ContextFields(logging.Filter):
    """The request's or job's fields, and the active span's ids, set on each record as it is
    handled (in the task or thread that logged it, so in its context). A field the call gave in
    ``extra`` is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        under_way = context.current()
        fields = under_way.fields() if under_way is not None else _procrastinates(record)
        fields.update(_span_ids())
        for key, value in fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _procrastinates(record: logging.LogRecord) -> dict[str, Any]:
    """procrastinate logs a job's start and end outside the job's context, with the job in
    ``extra``: its id, queue and task, named as a job's own lines name them."""
    job = getattr(record, "job", None)
    if not isinstance(job, Mapping) or "id" not in job:
        return {}
    return {"job_id": job["id"], "queue": job.get("queue"), "task": job.get("task_name")}


def _span_ids() -> dict[str, str]:
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return {}
    return {"trace_id": f"{span.trace_id:032x}", "span_id": f"{span.span_id:016x}"}


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, logger, message, then the record's fields;
    ``exception`` holds a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<timestamp> <LEVEL> <logger>: <message> key=value ...``, a traceback on the lines
    after: for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={_shown(value)}" for key, value in extras(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quoted when a reader (or a parser splitting on spaces) would lose where it ends.
    return json.dumps(text) if not text or any(c in text for c in ' "=\n') else text


def prepare(handler: logging.Handler, output: LogFormat) -> logging.Handler:
    """``handler`` writing what the service writes: its fields, redacted, in ``output``."""
    handler.addFilter(Once())
    handler.addFilter(ContextFields())
    handler.addFilter(Redact())
    handler.addFilter(ExpectedInOneLine())
    handler.setFormatter(JsonFormatter() if output is LogFormat.json else TextFormatter())
    return handler


class Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``sys.stdout`` as it is when a record is written (a test's capture,
    a redirection made after start-up), not as it was when logging was set up."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass


class Stderr(Stdout):
    """For a command whose own output is on stdout (``vetify check --json``): its logs must not
    be mixed into what a script parses."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _: IO[str]) -> None:
        pass


def configure(output: LogFormat, level: str, *, to_stderr: bool = False) -> logging.Handler:
    """The process's logging: one handler on stdout (or stderr) at ``level``, replacing the one
    set up before it (a command configures again once its settings are read). Returns it."""
    handler = prepare(Stderr() if to_stderr else Stdout(), output)
    handler.setLevel(level)
    hold_clients_at_info()
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, Stdout):
            root.removeHandler(old)
    root.addHandler(handler)
    # Never raised: where a test has opened the root logger wider, it stays open for it.
    root.setLevel(min(root.level, handler.level) if root.level else logging.NOTSET)
    return handler
