"""Engine, and the one database session (one transaction) each request runs in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from app.db.faults import bound_waits, contention, unavailability
from app.settings import Settings


class DatabaseUnresolved(RuntimeError):
    """No database URL: the embedded database must be started (``app.cli.database``) first."""


def database_url(settings: Settings) -> str:
    """The service role's database URL, which the settings have once a database is chosen."""
    if settings.database_url is None:
        raise DatabaseUnresolved("resolve the embedded database before connecting")
    return settings.database_url.get_secret_value()


STATEMENT_MARGIN_SECONDS = 1.0
"""How long after PostgreSQL's own statement timeout the client gives up on a statement: the
server's cancellation (57014) is the cleaner end, while the server can still send it."""


def statement_given_up_after(settings: Settings) -> float:
    """Seconds after which the client gives up waiting for a statement's answer: the server's
    statement timeout and the margin."""
    return settings.db_statement_timeout_ms / 1000 + STATEMENT_MARGIN_SECONDS


def unresponsive_within(settings: Settings) -> float:
    """Seconds within which a request is answered 503 once the database stops answering (down,
    frozen, partitioned), while a pooled connection is free: its connection is checked and a new
    one tried (ping, then connect), or the statement it waits on is given up (statement timeout
    and margin). With every connection in use, the wait for one (the connect timeout) adds."""
    acquire = settings.db_ping_timeout_seconds + settings.db_connect_timeout_seconds
    return max(acquire, statement_given_up_after(settings))


class WatchedPool(AsyncAdaptedQueuePool):
    """The usual pool, telling :attr:`on_wait` when a checkout finds every connection in use
    and has to wait for one, and :attr:`on_timeout` when that wait ran out (SQLAlchemy has no
    event for either; the metrics count them, and app.db may not import the metrics)."""

    on_wait: Callable[[], None] = staticmethod(lambda: None)
    on_timeout: Callable[[], None] = staticmethod(lambda: None)

    def _do_get(self) -> ConnectionPoolEntry:
        if self._pool.empty() and self._overflow >= self._max_overflow:
            self.on_wait()
        try:
            return super()._do_get()
        except PoolTimeout:
            self.on_timeout()
            raise

    def recreate(self) -> Any:
        # A pool made again (``dispose``) keeps telling the same listeners.
        fresh = super().recreate()
        if isinstance(fresh, WatchedPool):
            fresh.on_wait, fresh.on_timeout = self.on_wait, self.on_timeout
        return fresh


engine_hooks: list[Callable[[AsyncEngine], None]] = []
"""Called with each engine :func:`create_engine` makes: app/observability traces its statements
from here (the database layer imports nothing of observability; it only offers the engine)."""


def create_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        database_url(settings),
        poolclass=WatchedPool,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_connect_timeout_seconds,
        # A statement's parameters hold what clients sent (names, emails, clinical notes): never
        # in a log line or an error's message, which reach logs and error reports.
        hide_parameters=True,
        connect_args={
            # Client-side bounds: a frozen or partitioned server never answers, so its own
            # statement_timeout cannot fire; these turn a hang into a 503.
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": statement_given_up_after(settings),
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "idle_in_transaction_session_timeout": "60000",
                # The server's side: a client gone without a word (its host lost) is found
                # within a minute and a half, and its backend and locks freed.
                "tcp_keepalives_idle": "60",
                "tcp_keepalives_interval": "10",
                "tcp_keepalives_count": "3",
                "application_name": "vetify",
            },
        },
    )
    # Instead of pool_pre_ping:
    bound_waits(engine, settings.db_ping_timeout_seconds, settings.db_ping_after_idle_seconds)
    for hook in engine_hooks:
        hook(engine)
    return engine


def role_engine(url: str) -> AsyncEngine:
    """An engine for an operator's command connecting as the role in ``url`` (the owner's, the
    backup role's), whatever driver the URL names: asyncpg's."""
    return create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # Rows stay readable after commit: responses are built from them once the request's
    # transaction is done.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit once when the route returns, roll back if it raised.

    Used with ``scope="function"`` so the commit happens before the response is sent: a
    failed commit becomes an error response, never a success the database did not keep. Every
    failure to use the database in the request passes through here and becomes its 503, and a
    transaction the database undid for a concurrent one's sake its 409.
    """
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    try:
        async with factory() as session, session.begin():
            yield session
    except Exception as exc:
        problem = unavailability(exc) or contention(exc)
        if problem is None:
            raise
        raise problem from exc


DbSession = Annotated[AsyncSession, Depends(_request_session, scope="function")]


async def _session_factory(request: Request, _: DbSession) -> async_sessionmaker[AsyncSession]:
    # Taking the request's session puts the route inside it: a database failure in any other
    # session the route opens passes through ``_request_session`` too, and becomes a 503.
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return factory


DbSessions = Annotated[async_sessionmaker[AsyncSession], Depends(_session_factory)]
"""For work in another clinic than the request's, which takes a transaction of its own
(``app.db.tenancy.in_clinic``)."""
