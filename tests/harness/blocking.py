"""The app in process for synchronous drivers, such as Hypothesis state machines.

:func:`serving` starts the app (with its lifespan) on an event loop in a portal thread; the
:class:`Blocking` client sends requests to it and runs coroutines (e.g. :class:`World`
arrangements) on the same loop. :meth:`Blocking.empty` clears every table, so that each
state-machine run starts from nothing and a failing run replays exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import hypothesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test
from sqlalchemy import text

from app.main import create_app
from app.settings import Settings
from tests.harness import canary, databases
from tests.harness.world import World

T = TypeVar("T")


class Blocking:
    """An ``httpx.AsyncClient`` on the app, called from synchronous code through a portal."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient, settings: Settings):
        self._portal, self._client, self._settings = portal, client, settings

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            return await self._client.request(method, url, **kwargs)

        return self._portal.call(send)

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``function(*args)`` on the app's event loop."""
        return self._portal.call(function, *args)

    def empty(self) -> None:
        """Every table emptied (as the owner role), migrations' bookkeeping aside."""
        self.run(_empty, self._settings)


@contextmanager
def serving(settings: Settings) -> Iterator[tuple[Blocking, World]]:
    """The app with its lifespan, and a :class:`World` on its database, on one event loop."""
    app = create_app(settings)
    assert settings.database_url is not None
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(
            transport=transport, base_url="https://testserver", event_hooks=canary.WATCH.hooks()
        )
        engine = databases.engine(settings.database_url.get_secret_value())
        try:
            yield Blocking(portal, client, settings), World(engine, settings)
        finally:
            portal.call(client.aclose)
            portal.call(engine.dispose)


def run_machine(machine: type[RuleBasedStateMachine], settings: Settings, steps: int = 30) -> None:
    """Run a state machine whose rules call the app through ``machine.http`` and arrange rows
    through ``machine.world``: a tenth of the profile's examples, ``steps`` steps each."""
    with serving(settings) as (http, world):
        machine.http, machine.world = http, world
        profile = hypothesis.settings.default
        assert profile is not None
        run_state_machine_as_test(
            machine,
            settings=hypothesis.settings(
                max_examples=max(profile.max_examples // 10, 5),
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


APPEND_ONLY = ("audit_events", "audit_anchors", "security_events")
"""Tables whose triggers refuse TRUNCATE (migrations 0011, 0013, 0014)."""


async def _empty(settings: Settings) -> None:
    assert settings.database_owner_url is not None
    engine = databases.engine(settings.database_owner_url.get_secret_value())
    try:
        async with engine.begin() as connection:
            tables = (
                await connection.scalars(
                    text(
                        "SELECT quote_ident(tablename) FROM pg_tables"
                        " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    )
                )
            ).all()
            # The audit trail and its anchors refuse TRUNCATE to everyone (ADR 0027); their
            # owner may lift that for the transaction that empties this throwaway database.
            for table in APPEND_ONLY:
                await connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            await connection.execute(text(f"TRUNCATE {', '.join(tables)}"))
            for table in APPEND_ONLY:
                await connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    finally:
        await engine.dispose()
