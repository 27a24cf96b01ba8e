"""The ``vetify`` command: serve (embedded database by default), demo, migrate, worker, and
the billing operator commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.billing import operations
from app.db import migrate
from app.db.embedded import DataDirectoryInUse, EmbeddedPostgres, claim
from app.db.session import create_engine, database_url
from app.kit import server
from app.kit.lifecycle import JOBS_SHARE, Shutdown
from app.main import create_app
from app.queue import ExpectedInOneLine, Worker
from app.settings import ConfigurationError, Settings

log = logging.getLogger("vetify")

EMBEDDED_DATABASE = "vetify"
EMBEDDED_OWNER = "vetify_owner"
EMBEDDED_APP = "vetify_app"


@contextmanager
def database(settings: Settings, shutdown: Shutdown | None = None) -> Iterator[Settings]:
    """The configured database, or an embedded one in ``settings.data_dir``; migrated to head.
    The embedded one is stopped at the end, or at once if ``shutdown``'s deadline passes."""
    with ExitStack() as stack:
        if settings.embedded:
            server = EmbeddedPostgres(settings.data_dir / "pgdata")
            stack.callback(server.stop)
            if shutdown is not None:
                shutdown.at_deadline(lambda: server.stop("immediate"))
            log.info("starting the embedded PostgreSQL in %s", server.data_dir)
            server.start()
            migrate.bootstrap_sync(server.url(), EMBEDDED_DATABASE, EMBEDDED_OWNER, EMBEDDED_APP)
            settings = settings.model_copy(
                update={
                    "database_url": SecretStr(server.url(EMBEDDED_APP, EMBEDDED_DATABASE)),
                    "database_owner_url": SecretStr(server.url(EMBEDDED_OWNER, EMBEDDED_DATABASE)),
                }
            )
        if settings.database_owner_url is not None:
            migrate.upgrade(
                settings.database_owner_url.get_secret_value(),
                migrate.role_of(database_url(settings)),
            )
        yield settings


def _claimed(settings: Settings, holder: str) -> AbstractContextManager[None]:
    """The embedded database's data directory, for this process alone (issue 16: a second
    `vetify serve` on it stopped the first one's PostgreSQL and took over)."""
    return claim(settings.data_dir, holder) if settings.embedded else nullcontext()


async def _seed_demo(settings: Settings, docs_url: str) -> None:
    # Lazily (documented exception to "no imports in functions"): fixtures/ sits beside app/
    # in the source tree, and only `vetify demo` seeds from it.
    from fixtures.demo import seed_demo

    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            login = await seed_demo(session)
    finally:
        await engine.dispose()
    what = "created" if login.created else "already there"
    print(
        f"\nDemo clinic {what}. Log in at POST /api/v1/auth/login with\n"
        f"  email:    {login.email}\n  password: {login.password}\n"
        f"then open {docs_url}\n",
        flush=True,
    )


def _serve(settings: Settings, host: str, port: int, demo: bool) -> None:
    with (
        _claimed(settings, f"vetify serve (pid {os.getpid()}, port {port})"),
        server.listen(host, port) as sock,
    ):
        # From here on there is something to stop cleanly.
        shutdown = Shutdown(settings.shutdown_timeout_seconds).install()
        with database(settings, shutdown) as ready:
            if settings.embedded:
                # One command for a newcomer: the API and its jobs, on the embedded database.
                ready = ready.model_copy(update={"jobs_in_process": True})
            if demo and not shutdown.requested:
                asyncio.run(_seed_demo(ready, f"http://{host}:{port}/docs"))
            if not shutdown.requested:  # else asked to stop while starting: done
                server.run(create_app(ready), ready, sock, shutdown)


def _migrate(settings: Settings) -> None:
    if settings.database_url is not None and settings.database_owner_url is None:
        raise SystemExit("vetify migrate: set VETIFY_DATABASE_OWNER_URL (the schema owner's URL)")
    with _claimed(settings, f"vetify migrate (pid {os.getpid()})"), database(settings):
        print("database schema is at head")


def _worker(settings: Settings) -> None:
    if settings.embedded:
        # Its PostgreSQL belongs to `vetify serve`, which runs the jobs itself.
        raise SystemExit(
            "vetify worker: set VETIFY_DATABASE_URL; on the embedded database `vetify serve`"
            " runs the jobs in its own process"
        )
    shutdown = Shutdown(settings.shutdown_timeout_seconds).install()
    with database(settings) as ready:
        if not shutdown.requested:
            asyncio.run(_work(ready, shutdown))


async def _work(settings: Settings, shutdown: Shutdown) -> None:
    worker = Worker(settings, settings.shutdown_timeout_seconds * JOBS_SHARE).start()
    await shutdown.wait()
    await worker.stop()


def _billing(settings: Settings, args: argparse.Namespace) -> None:
    with _claimed(settings, f"vetify billing (pid {os.getpid()})"), database(settings) as ready:
        print(asyncio.run(operations.run(ready, args)), flush=True)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="vetify", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the API (embedded PostgreSQL unless DATABASE_URL is set)"),
        ("demo", "serve with the demo clinic seeded"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        if name == "serve":
            command.add_argument("--demo", action="store_true", help="seed the demo clinic")
    commands.add_parser("migrate", help="apply database migrations (as the schema owner)")
    commands.add_parser("worker", help="run background jobs (the procrastinate worker)")
    operations.add_commands(
        commands.add_parser("billing", help="Stripe events: list, metrics, replay")
    )
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    output = logging.StreamHandler()
    output.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    output.addFilter(ExpectedInOneLine())
    logging.basicConfig(level=logging.INFO, handlers=[output])
    try:
        settings = Settings()
        if args.command == "migrate":
            _migrate(settings)
        elif args.command == "worker":
            _worker(settings)
        elif args.command == "billing":
            _billing(settings, args)
        else:
            _serve(settings, args.host, args.port, demo=args.command == "demo" or args.demo)
    except (ConfigurationError, DataDirectoryInUse, server.PortUnavailable) as exc:
        # A refusal, in one line (a ConfigurationError: one per setting at fault, naming none
        # of their values), never a traceback.
        raise SystemExit(f"vetify {args.command}: {exc}") from None


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
