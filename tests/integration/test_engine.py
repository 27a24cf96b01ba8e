"""The engine and sessions the app runs on (app/db/session.py), as the database sees them:
the pool's bounds, each connection's timeouts, keepalives and name, and sessions that flush
before they query and keep their rows readable after commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clinics.models import Location
from app.db.faults import DatabaseUnavailable, unavailability
from app.db.session import create_engine, session_factory
from app.db.tenancy import enter_tenant
from app.settings import Settings
from fixtures.factories import LocationFactory
from tests.harness.plugin import through_proxy
from tests.harness.proxy import FaultProxy


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    # Small bounds, so that each is reached within a test.
    bounded = settings.model_copy(
        update={
            "db_pool_size": 1,
            "db_max_overflow": 1,
            "db_connect_timeout_seconds": 0.5,
            "db_statement_timeout_ms": 500,
        }
    )
    made = create_engine(bounded)
    yield made
    await made.dispose()


async def test_the_pool_lends_its_size_and_overflow_then_waits_its_timeout(engine) -> None:
    async with engine.connect(), engine.connect():
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            async with engine.connect():
                pass
        waited = time.monotonic() - started
    # The connect timeout: a request then answers 503 database-busy, not waits on.
    assert 0.4 < waited < 3


async def test_each_connection_carries_the_services_timeouts_keepalives_and_name(engine) -> None:
    async with engine.connect() as connection:
        settings = await connection.execute(
            text(
                "SELECT current_setting('statement_timeout'),"
                " current_setting('idle_in_transaction_session_timeout'),"
                " current_setting('tcp_keepalives_idle'),"
                " current_setting('tcp_keepalives_interval'),"
                " current_setting('tcp_keepalives_count'),"
                " current_setting('application_name')"
            )
        )
        assert tuple(settings.one()) == ("500ms", "1min", "60", "10", "3", "vetify")


async def test_a_statement_the_server_does_not_end_is_given_up_by_the_client(engine) -> None:
    # A frozen server never sends its own statement timeout's cancellation: the client gives
    # up a margin of a second after it (here 0.5 s + 1 s).
    async with engine.connect() as connection:
        await connection.execute(text("SET statement_timeout = 0"))
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # asyncpg's; faults.py makes it a 503
            await connection.execute(text("SELECT pg_sleep(10)"))
        waited = time.monotonic() - started
    assert 1.3 < waited < 5  # not the 10 s the statement asks for


async def test_a_session_flushes_before_it_queries_and_keeps_its_rows_after_commit(
    app_engine, world
) -> None:
    clinic = await world.clinic(roles=())
    sessions = session_factory(app_engine)
    async with sessions() as session, session.begin():
        await enter_tenant(session, clinic.id)
        location = LocationFactory.build(name=f"Annex {uuid.uuid4().hex}")
        session.add(location)
        # Not flushed by hand: a service adds a row, then looks it up.
        found = await session.scalar(select(Location).where(Location.name == location.name))
        assert found is location
    # Responses are built from the rows after the request's commit, without another query:
    # the row keeps what the database made of it.
    async with sessions() as session, session.begin():
        await enter_tenant(session, clinic.id)
        stored = await session.scalar(select(Location.created_at).where(Location.id == location.id))
    assert location.created_at == stored


@pytest.mark.parametrize("idle", [False, True], ids=["checked every time", "idle past the window"])
async def test_a_pooled_connection_that_stops_answering_is_given_up_within_its_ping_timeout(
    idle: bool, settings: Settings, database_proxy: FaultProxy
) -> None:
    # A frozen or partitioned server: the pooled connection's check is given up within the
    # ping timeout, and the new connection tried in its place within the connect timeout;
    # the request is then a 503, not a wait on a server that may never answer.
    proxy = database_proxy
    engine = create_engine(
        through_proxy(
            settings,
            proxy,
            db_ping_timeout_seconds=0.3,
            db_connect_timeout_seconds=0.5,
            db_ping_after_idle_seconds=0.2 if idle else 0,
        )
    )
    failure: Exception | None = None
    try:
        async with engine.connect() as connection:
            await connection.scalar(text("SELECT 1"))
        if idle:
            await asyncio.sleep(0.3)
        proxy.latency = 2.0  # each way: a ping answered only after 4 s
        started = time.monotonic()
        try:
            async with engine.connect():
                pass
        except Exception as exc:
            failure = exc
        waited = time.monotonic() - started
    finally:
        proxy.heal()
        await engine.dispose()
    assert failure is not None
    assert isinstance(unavailability(failure), DatabaseUnavailable), repr(failure)
    assert waited < 2.5


async def test_a_connection_back_in_the_pool_within_the_window_is_used_unchecked(
    settings: Settings, database_proxy: FaultProxy
) -> None:
    """A busy service pays no round trip per request to check a connection that answered a
    moment ago: with the database slow from then on, taking the connection does not wait."""
    proxy = database_proxy
    engine = create_engine(through_proxy(settings, proxy, db_ping_after_idle_seconds=30))
    try:
        async with engine.connect() as connection:
            await connection.scalar(text("SELECT 1"))
        proxy.latency = 2.0
        started = time.monotonic()
        async with engine.connect():
            pass
        assert time.monotonic() - started < 1.0
    finally:
        proxy.heal()
        await engine.dispose()


async def test_a_session_refuses_a_row_of_another_clinic_at_flush(
    app_engine, world, superuser_engine
) -> None:
    """A row stamped with another clinic's id, added in this clinic's session, fails the flush."""
    here, there = await world.clinic(roles=()), await world.clinic(roles=())
    name = f"Annex {uuid.uuid4().hex}"
    sessions = session_factory(app_engine)
    async with sessions() as session, session.begin() as transaction:
        await enter_tenant(session, here.id)
        session.add(LocationFactory.build(name=name, tenant_id=there.id))
        with pytest.raises(RuntimeError) as refused:
            await session.flush()
        await transaction.rollback()
    assert str(refused.value) == "a row of another clinic was added to this session"
    # The clinic's own id, stated outright, is accepted: the refusal is of the other clinic.
    async with sessions() as session, session.begin():
        await enter_tenant(session, here.id)
        session.add(LocationFactory.build(name=f"{name} ours", tenant_id=here.id))
    async with superuser_engine.connect() as connection:
        stored = await connection.execute(
            text("SELECT name, tenant_id FROM locations WHERE name LIKE :n"), {"n": f"{name}%"}
        )
        assert stored.all() == [(f"{name} ours", here.id)]
