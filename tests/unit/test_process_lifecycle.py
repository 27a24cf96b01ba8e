"""Pieces of the process lifecycle that need no process (tests/chaos/test_lifecycle.py runs the
real ones): the data directory's lock, and procrastinate's records that an operator expects,
written in one line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import procrastinate.exceptions
import psycopg
import pytest

from app.db.embedded import LOCK_FILE, DataDirectoryInUse, claim
from app.queue import ExpectedInOneLine


def test_a_data_directory_is_claimed_once_and_the_refusal_names_the_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with claim(state, "vetify serve (pid 1234, port 8000)"):
        with pytest.raises(DataDirectoryInUse) as refused, claim(state, "vetify migrate"):
            pass
        assert "in use by vetify serve (pid 1234, port 8000)" in str(refused.value)
        assert str(state.resolve()) in str(refused.value)
    # Released at the end (or by the kernel, when a killed process's descriptor goes).
    with claim(state, "vetify migrate (pid 99)"):
        assert (state / LOCK_FILE).read_text() == "vetify migrate (pid 99)"


def _record(exc: BaseException, **extra: object) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    record = logging.getLogger("procrastinate.worker").makeRecord(
        "procrastinate.worker", logging.ERROR, __file__, 1, "job %s", ("x",), exc_info
    )
    record.__dict__.update(extra)
    return record


def _wrapped(cause: Exception) -> procrastinate.exceptions.ConnectorException:
    # As procrastinate's connector raises it: `raise ConnectorException from exc`.
    try:
        raise procrastinate.exceptions.ConnectorException() from cause
    except procrastinate.exceptions.ConnectorException as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "extra"),
    [
        pytest.param(
            _wrapped(psycopg.OperationalError("connection failed: Connection refused")),
            {},
            id="database-out-of-reach",
        ),
        pytest.param(ConnectionRefusedError(111, "Connection refused"), {}, id="relay-refused"),
        pytest.param(
            asyncio.CancelledError(), {"action": "job_aborted_retry"}, id="job-aborted-by-shutdown"
        ),
    ],
)
def test_what_an_operator_expects_is_one_line(exc: BaseException, extra: dict[str, str]) -> None:
    record = _record(exc, **extra)
    assert ExpectedInOneLine().filter(record)
    assert record.exc_info is None
    assert record.getMessage().startswith("job x (")
    assert type(exc).__name__ in record.getMessage()
    assert "\n" not in logging.Formatter().format(record)


@pytest.mark.parametrize(
    ("exc", "extra"),
    [
        pytest.param(
            _wrapped(psycopg.errors.UndefinedTable("relation does not exist")), {}, id="sql-error"
        ),
        pytest.param(ValueError("a bug"), {}, id="a-bug"),
        pytest.param(asyncio.CancelledError(), {"action": "side_task_failed"}, id="cancelled"),
    ],
)
def test_anything_else_keeps_its_traceback(exc: BaseException, extra: dict[str, str]) -> None:
    record = _record(exc, **extra)
    assert ExpectedInOneLine().filter(record)
    assert record.exc_info is not None
    assert "Traceback" in logging.Formatter().format(record)
