"""What a failure to use the database means to a request, and how long a request waits for a
database that does not answer.

A database that is down, starting up after a crash, shutting down, out of connections or out of
reach is answered 503 problem+json with Retry-After, never 500: the client should come back.
Such failures arrive in many shapes (a SQLAlchemy wrapper around an asyncpg error, asyncpg's own
error, an ``OSError`` from the socket, a ``TimeoutError``), so they are recognised by what the
chain of exceptions carries: a SQLSTATE class, a broken connection, a socket error.

A database that stops answering (frozen, or a partition that drops packets) raises nothing: only
the client's own timeouts end the wait, and every one is bounded (README, Health and timeouts).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from app.kit.problems import Conflict, Problem, ServiceUnavailable

UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
"""Connection exceptions (08: refused, reset, lost), insufficient resources (53: too many
connections, disk full) and operator intervention (57: a statement cancelled, 57014; shut down by
an administrator, 57P01, or by a crash, 57P02; starting up or recovering, 57P03)."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database could not be reached, or the connection broke mid-request."""

    slug, title = "database-unavailable", "Database unavailable"

    def __init__(self) -> None:
        # A connection lost during COMMIT may have committed: say so rather than promise.
        super().__init__(
            "The database is unavailable; the request may or may not have been applied."
            " Retry shortly, checking first before repeating a create."
        )


class DatabaseBusy(ServiceUnavailable):
    """Every pooled connection stayed busy for the pool's whole timeout: load to shed."""

    slug, title = "database-busy", "Too busy"

    def __init__(self) -> None:
        # Nothing was done: the request never got a connection to do it with.
        super().__init__(
            "Every database connection is busy; nothing was changed. Try again shortly.",
            retry_after=1,
        )


CONTENTION_SQLSTATE_CLASS = "40"
"""Transaction rollback: a deadlock (40P01) or a serialization failure (40001). The database
undid the whole transaction because another one touched the same rows at the same moment (two
bookings of one slot, each waiting on the other's row): nothing of it was kept, and sending it
again is safe."""


class ConcurrentChange(Conflict):
    """The database undid the request's transaction: another one changed the same data at the
    same moment."""

    slug, title = "concurrent-change", "Changed at the same moment"

    def __init__(self) -> None:
        super().__init__(
            "Another request changed the same data at the same moment, and nothing of this one"
            " was kept. Send it again."
        )


def contention(exc: BaseException) -> ConcurrentChange | None:
    """The 409 that ``exc`` stands for when the database rolled the transaction back for
    another one's sake; None otherwise."""
    if isinstance(exc, Problem):
        return None
    for cause in _chain(exc):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] == CONTENTION_SQLSTATE_CLASS:
            return ConcurrentChange()
    return None


def unavailability(exc: BaseException) -> ServiceUnavailable | None:
    """The 503 that ``exc``, raised while using the database, stands for; None when it is an
    error of the request or of the code (a constraint, a bug), which keeps its own answer."""
    if isinstance(exc, Problem):
        return None
    if isinstance(exc, PoolTimeout):
        return DatabaseBusy()
    if any(_unavailable(cause) for cause in _chain(exc)):
        return DatabaseUnavailable()
    return None


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | OSError):
        return True  # OSError: refused, reset, timed out (TimeoutError is one)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: its cause, the exception it was raised while handling, and a
    DB-API wrapper's original (asyncpg's error behind SQLAlchemy's)."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is f for f in found):
            continue
        found.append(current)
        pending += [current.__cause__, getattr(current, "orig", None)]
        if not current.__suppress_context__:
            pending.append(current.__context__)
    return found


_PING_FAILED = "vetify_ping_failed"
_RETURNED_AT = "vetify_returned_at"


def bound_waits(engine: AsyncEngine, ping_timeout: float, idle_after: float = 0.0) -> None:
    """Check each pooled connection idle for more than ``idle_after`` seconds before use, within
    ``ping_timeout``, and abandon at once a connection whose statement timed out or was
    cancelled.

    A connection back in the pool within ``idle_after`` answered a moment ago: it is only seen
    to be open (a reset or a server's goodbye closes it in the event loop), with no round trip.
    A server that stopped answering in that moment says nothing: the first statement then waits
    its bound instead of the ping's, as a request under way would (README, Health and timeouts).

    SQLAlchemy's own ``pool_pre_ping`` takes three round trips, each bounded only by the
    statement timeout, and SQLAlchemy closes a connection it invalidates politely, waiting up to
    2 s more for a server that may never answer: a request on a pooled connection to a frozen
    database took 19 s (issue 16, defect 4). Here one round trip, then the socket is cut.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_connection: Any, entry: ConnectionPoolEntry) -> None:
        if entry.record_info is not None:
            entry.record_info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "connect")
    def _opened(_connection: Any, entry: ConnectionPoolEntry) -> None:
        if entry.record_info is not None:
            entry.record_info.pop(_RETURNED_AT, None)  # of the connection this one replaces

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(connection: Any, entry: ConnectionPoolEntry, _proxy: Any) -> None:
        # Kept with the pool's entry, which outlives the connections it opens in turn.
        marks = entry.record_info if entry.record_info is not None else {}
        returned = marks.get(_RETURNED_AT)
        recent = returned is not None and time.monotonic() - returned <= idle_after
        try:
            if recent:
                # No round trip: only whether the socket is still open (a reset, or the server
                # closing it, has been seen by the event loop).
                if connection.driver_connection.is_closed():
                    raise ConnectionResetError("the pooled connection was closed")
                return
            connection.run_async(lambda driver: driver.execute("SELECT 1", timeout=ping_timeout))
        except BaseException as exc:
            connection.driver_connection.terminate()
            if not isinstance(exc, Exception):
                raise  # cancelled: the caller's own deadline
            if marks.pop(_PING_FAILED, False):
                # The new connection the pool opened in its place failed too: SQLAlchemy would
                # give up with "This connection is closed", a 500 while every connection was
                # being reset (tests/chaos/test_faults.py, connection resets).
                raise DatabaseUnavailable() from exc
            marks[_PING_FAILED] = True
            # The pool opens a new connection in its place, and checks it here again.
            raise DisconnectionError("the pooled connection did not answer") from exc
        marks.pop(_PING_FAILED, None)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _abandon(context: ExceptionContext) -> None:
        # Each connection answers for itself at its next checkout: a frozen server must not make
        # every other pooled connection wait to be closed politely.
        context.invalidate_pool_on_disconnect = False
        error = context.original_exception
        if isinstance(error, TimeoutError) or not isinstance(error, Exception):
            # A statement left unanswered (timed out, or cancelled by a deadline): the server may
            # never answer, and the connection's state is unknown.
            connection = context.connection
            if connection is not None and not (connection.invalidated or connection.closed):
                driver = connection.connection.driver_connection
                if driver is not None:
                    driver.terminate()
            context.is_disconnect = True
