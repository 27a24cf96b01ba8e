"""Which failures to use the database are the database's state (503 with Retry-After), and which
are the request's or the code's (their own answer): by SQLSTATE class, broken connection or
socket error, in every shape asyncpg and SQLAlchemy hand them on (issue 16, defect 3)."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import PostgresError
from sqlalchemy.dialects.postgresql.asyncpg import (
    AsyncAdapt_asyncpg_connection,
    AsyncAdapt_asyncpg_dbapi,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.db.faults import (
    ConcurrentChange,
    DatabaseBusy,
    DatabaseUnavailable,
    contention,
    unavailability,
)
from app.db.session import unresponsive_within
from app.kit.problems import NotFound
from app.settings import Settings


def server_error(sqlstate: str) -> PostgresError:
    """The error asyncpg raises when PostgreSQL answers with ``sqlstate``."""
    return PostgresError.new({"C": sqlstate, "M": f"server says {sqlstate}", "S": "FATAL"})


def through_sqlalchemy(error: Exception) -> DBAPIError:
    """``error`` as SQLAlchemy hands it on: translated by its asyncpg dialect, then wrapped."""
    dbapi = AsyncAdapt_asyncpg_dbapi(asyncpg)
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(dbapi, error)
    except Exception as translated:
        return DBAPIError.instance("SELECT 1", None, translated, dbapi.Error)
    raise AssertionError("the dialect did not raise")


def raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException as handling:
            raise then from handling
    except BaseException as raised:
        return raised


UNAVAILABLE_STATES = {
    "57P01": "terminated by an administrator (or a fast shutdown)",
    "57P02": "terminated because another server process crashed",
    "57P03": "the database system is starting up / in recovery / shutting down",
    "57014": "statement cancelled (statement_timeout)",
    "08006": "connection failure",
    "08003": "connection does not exist (closed in the middle of an operation)",
    "08001": "unable to establish a connection",
    "53300": "too many connections",
}


@pytest.mark.parametrize("sqlstate", UNAVAILABLE_STATES)
@pytest.mark.parametrize("wrapped", [False, True], ids=["asyncpg", "sqlalchemy"])
def test_a_database_not_available_is_a_503(sqlstate: str, wrapped: bool) -> None:
    error: BaseException = server_error(sqlstate)
    if wrapped:
        error = through_sqlalchemy(error)

    assert isinstance(unavailability(error), DatabaseUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        # asyncpg reports a reset while connecting as "closed in the middle of operation"
        raised_while_handling(
            ConnectionResetError(104, "Connection reset by peer"),
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        ),
    ],
    ids=repr,
)
def test_a_broken_or_refused_connection_is_a_503(error: BaseException) -> None:
    assert isinstance(unavailability(error), DatabaseUnavailable)
    if isinstance(error, Exception):
        assert isinstance(unavailability(through_sqlalchemy(error)), DatabaseUnavailable)


def test_a_connection_sqlalchemy_invalidated_is_a_503_whatever_the_driver_raised() -> None:
    # The dialect judged the error a disconnect (its is_disconnect) though the driver's error
    # is of no class and no SQLSTATE we know: the connection is gone, so is the request's.
    error = DBAPIError("SELECT 1", None, RuntimeError("closed"), connection_invalidated=True)

    assert isinstance(unavailability(error), DatabaseUnavailable)
    assert unavailability(DBAPIError("SELECT 1", None, RuntimeError("closed"))) is None


def raised_during(first: BaseException, then: BaseException) -> BaseException:
    """``then`` raised inside the handler of ``first`` without ``from`` (implicit context)."""
    try:
        try:
            raise first
        except BaseException:
            raise then  # noqa: B904 - the implicit chain is the point
    except BaseException as raised:
        return raised


def test_the_cause_is_found_behind_a_wrapper_and_behind_an_error_raised_while_handling() -> None:
    # A driver error of no known class wrapped by SQLAlchemy, raised from a reset socket: the
    # wrapper's original and its cause are both followed.
    wrapped = raised_while_handling(
        ConnectionResetError(104, "Connection reset by peer"),
        DBAPIError("COMMIT", None, RuntimeError("protocol state")),
    )
    # An error raised while cleaning up after a lost connection (a rollback that fails).
    during = raised_during(ConnectionResetError(104, "reset"), RuntimeError("rollback failed"))

    assert isinstance(unavailability(wrapped), DatabaseUnavailable)
    assert isinstance(unavailability(during), DatabaseUnavailable)
    # The same errors, with nothing of the connection behind them, keep their own answer.
    assert unavailability(DBAPIError("COMMIT", None, RuntimeError("protocol state"))) is None
    assert unavailability(raised_during(ValueError("x"), RuntimeError("y"))) is None


def test_each_503_tells_the_client_whether_repeating_the_request_is_safe() -> None:
    # A connection lost during COMMIT may have committed (check before repeating a create);
    # a request that never got a connection changed nothing (repeat it). The detail is the
    # only place a client learns which.
    unavailable, busy = DatabaseUnavailable(), DatabaseBusy()

    assert unavailable.detail == (
        "The database is unavailable; the request may or may not have been applied."
        " Retry shortly, checking first before repeating a create."
    )
    assert busy.detail == (
        "Every database connection is busy; nothing was changed. Try again shortly."
    )
    assert (unavailable.headers, busy.headers) == ({"Retry-After": "5"}, {"Retry-After": "1"})


@pytest.mark.parametrize(
    ("ping", "connect", "statement_ms", "within"),
    [(2.0, 3.0, 1000, 5.0), (0.5, 1.0, 9000, 10.0)],
    ids=["a dead connection and a new one", "a statement given up"],
)
def test_a_database_that_stops_answering_is_answered_within_the_longer_bound(
    ping: float, connect: float, statement_ms: int, within: float
) -> None:
    # The chaos stage waits this long for the 503 of a frozen or partitioned database: a
    # pooled connection's ping and then a new connection's connect, or the statement timeout
    # and the client's margin after it, whichever ends later.
    settings = Settings(
        _env_file=None,
        db_ping_timeout_seconds=ping,
        db_connect_timeout_seconds=connect,
        db_statement_timeout_ms=statement_ms,
    )
    assert unresponsive_within(settings) == within


def test_a_drained_pool_is_busy() -> None:
    assert isinstance(unavailability(PoolTimeout("QueuePool limit reached")), DatabaseBusy)


@pytest.mark.parametrize(
    "error",
    [
        through_sqlalchemy(server_error("23505")),  # unique violation
        through_sqlalchemy(server_error("42501")),  # row-level security refused a row
        through_sqlalchemy(server_error("22P02")),  # invalid text representation
        DBAPIError("INSERT", None, ValueError("bad value")),
        ValueError("a bug"),
        raised_while_handling(ConnectionResetError(), NotFound()),
    ],
    ids=repr,
)
def test_an_error_of_the_request_or_the_code_keeps_its_own_answer(error: BaseException) -> None:
    assert unavailability(error) is None


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_transaction_undone_for_another_is_a_409_to_send_again(sqlstate: str) -> None:
    for shape in (server_error(sqlstate), through_sqlalchemy(server_error(sqlstate))):
        found = contention(raised_while_handling(shape, RuntimeError("on rollback")))
        assert isinstance(found, ConcurrentChange)
        assert (found.status, found.slug) == (409, "concurrent-change")
        assert unavailability(shape) is None


@pytest.mark.parametrize("sqlstate", ["23505", "23P01", "22001", "42501", "57P01"])
def test_other_failures_are_not_contention(sqlstate: str) -> None:
    assert contention(through_sqlalchemy(server_error(sqlstate))) is None
    assert contention(ConcurrentChange()) is None  # a problem already keeps its own answer
