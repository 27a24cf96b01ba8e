"""Engine, and the one database session (one transaction) each request runs in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from asyncpg.exceptions import ConnectionDoesNotExistError, PostgresConnectionError
from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.kit.problems import ServiceUnavailable
from app.settings import Settings


class DatabaseUnresolved(RuntimeError):
    """No database URL: the embedded database must be started (``app.cli.database``) first."""


def database_url(settings: Settings) -> str:
    """The service role's database URL, which the settings have once a database is chosen."""
    if settings.database_url is None:
        raise DatabaseUnresolved("resolve the embedded database before connecting")
    return settings.database_url.get_secret_value()


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args={
            # Client-side bounds: a frozen or partitioned server never answers, so its own
            # statement_timeout cannot fire; these turn a hang into a 503.
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_ms / 1000 + 2,
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "idle_in_transaction_session_timeout": "60000",
                "application_name": "vetify",
            },
        },
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Rows stay readable after commit: responses are built from them once the request's
    # transaction is done.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit once when the route returns, roll back if it raised.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    failed commit becomes an error response, never a success the database did not keep.
    """
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    try:
        async with factory() as session, session.begin():
            yield session
    except PoolTimeout as exc:
        raise DatabaseBusy() from exc
    except (OperationalError, InterfaceError, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or _connection_lost(exc):
            raise DatabaseUnavailable() from exc
        raise


def _connection_lost(exc: BaseException) -> bool:
    """A broken connection behind a generic DBAPIError (asyncpg reports a reset during
    connect as "connection was closed in the middle of operation")."""
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionDoesNotExistError | PostgresConnectionError | OSError):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
    return False


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


DbSession = Annotated[AsyncSession, Depends(_request_session, scope="function")]


def _session_factory(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return factory


DbSessions = Annotated[async_sessionmaker[AsyncSession], Depends(_session_factory)]
"""For work in another clinic than the request's, which takes a transaction of its own
(``app.db.tenancy.in_clinic``)."""
