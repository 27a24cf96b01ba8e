"""The ``vetify`` command: serve (embedded database by default), demo, migrate, worker, the
billing operator commands, usage, audit verify, keys rotate-kek, backup (the embedded
database's), and db provision (an external PostgreSQL's database and roles)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import logging
import os
import secrets
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker

from app import (
    health,
    models,  # noqa: F401  (every table: the metadata complete, for exports and deletion)
)
from app.audit import anchors, retention, security
from app.audit import service as audit
from app.auth import retention as auth_retention
from app.backup import commands as backup_commands
from app.backup import service as backup
from app.backup.repository import BackupError
from app.billing import operations
from app.db import migrate, provision
from app.db.embedded import DATABASE as EMBEDDED_DATABASE
from app.db.embedded import DataDirectoryInUse, claim
from app.db.session import create_engine
from app.keys import rotation
from app.keys import service as keys
from app.kit import server, supervisor
from app.kit.clock import utcnow
from app.kit.events import SecurityEvent, security_event
from app.kit.lifecycle import JOBS_SHARE, Shutdown
from app.kit.storage import storage_from
from app.kit.usage import Usage
from app.main import create_app, dependency_probes
from app.observability import errors, logs, scrape, tracing, usage, usage_report
from app.observability.dependencies import Report, Status
from app.privacy import archive, departure, restore
from app.privacy import retention as client_retention
from app.queue import Worker
from app.settings import ConfigurationError, Environment, LogFormat, Settings, key_bytes

log = logging.getLogger("vetify")

ROLES = provision.Roles()
"""The roles' names on the embedded database, and `vetify db provision`'s defaults."""


@contextmanager
def database(
    settings: Settings, shutdown: Shutdown | None = None, *, serving: bool = False
) -> Iterator[Settings]:
    """The configured database, or an embedded one in ``settings.data_dir``; migrated to head;
    for a command that connects as the service's role. The embedded one is stopped at the end,
    or at once if ``shutdown``'s deadline passes; ``serving``: its base backup, if it needs
    one, is taken while it serves."""
    if settings.database_url is None and not settings.embedded:
        raise SystemExit(
            "vetify: VETIFY_DATABASE_OWNER_URL is set but VETIFY_DATABASE_URL is not: set the"
            " service role's URL too (with an external database configured, no embedded one"
            " is started)"
        )
    with _at_head(settings, shutdown, serving=serving) as ready:
        yield ready


@contextmanager
def _at_head(
    settings: Settings, shutdown: Shutdown | None = None, *, serving: bool = False
) -> Iterator[Settings]:
    """The database (the embedded one started and set up if none is configured), migrated
    when the owner's URL is known."""
    embedded = None
    with ExitStack() as stack:
        if settings.embedded:
            embedded = backup.embedded(settings)
            stack.callback(embedded.stop)
            if shutdown is not None:
                shutdown.at_deadline(lambda: embedded.stop("immediate"))
            log.info("starting the embedded PostgreSQL in %s", embedded.data_dir)
            embedded.start()
            provision.provision_sync(
                embedded.url(), provision.Provisioning(EMBEDDED_DATABASE, ROLES)
            )
            settings = settings.model_copy(
                update={
                    "database_url": SecretStr(embedded.url(ROLES.app, EMBEDDED_DATABASE)),
                    "database_owner_url": SecretStr(embedded.url(ROLES.owner, EMBEDDED_DATABASE)),
                    "database_backup_url": SecretStr(embedded.url(ROLES.backup, EMBEDDED_DATABASE)),
                }
            )
        if settings.database_owner_url is not None:
            owner = settings.database_owner_url.get_secret_value()
            migrate.upgrade(owner, _service_role(settings), keys=keys.wrapper_from(settings))
            where = make_url(owner)
            log.info("database %s on %s: schema at head", where.database, where.host or "socket")
        if embedded is not None:
            backup.ensure_base(settings, embedded, wait=not serving)
        yield settings


def _claimed(settings: Settings, holder: str) -> AbstractContextManager[None]:
    """The embedded database's data directory, for this process alone (issue 16: a second
    `vetify serve` on it stopped the first one's PostgreSQL and took over)."""
    return claim(settings.data_dir, holder) if settings.embedded else nullcontext()


async def _seed_demo(settings: Settings, public_url: str) -> None:
    # Lazily (documented exception to "no imports in functions"): fixtures/ sits beside app/
    # in the source tree, and only `vetify demo` seeds from it.
    from fixtures.demo import seed_demo

    keys.configure(keys.wrapper_from(settings))  # the demo's clients' details are sealed
    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            login = await seed_demo(session)
    finally:
        await engine.dispose()
    what = "created" if login.created else "already there"
    print(
        f"\nDemo clinic {what}. Open {public_url}/ and log in with\n"
        f"  email:    {login.email}\n  password: {login.password}\n"
        f"(the API's interactive docs: {public_url}/docs)\n",
        flush=True,
    )


def _serve(settings: Settings, host: str, port: int, demo: bool) -> None:
    with (
        _claimed(settings, f"vetify serve (pid {os.getpid()}, port {port})"),
        server.listen(host, port) as sock,
    ):
        # From here on there is something to stop cleanly.
        shutdown = Shutdown(settings.shutdown_timeout_seconds).install()
        with database(_served_at(settings, host, port), shutdown, serving=True) as ready:
            if settings.embedded:
                # One command for a newcomer: the API and its jobs, on the embedded database.
                ready = ready.model_copy(update={"jobs_in_process": True})
            if demo and not shutdown.requested:
                asyncio.run(_seed_demo(ready, ready.public_url))
            if not shutdown.requested:  # else asked to stop while starting: done
                _serve_ready(ready, sock, shutdown)


def _serve_ready(settings: Settings, sock: socket.socket, shutdown: Shutdown) -> None:
    """Serve in this process, or in ``settings.workers`` forked from it."""
    if settings.workers == 1:
        with metrics_listener(settings), tracing.traced():
            server.run(create_app(settings), settings, sock, shutdown)
        return
    # The workers count in files of a directory of their own (emptied by every start), which
    # the supervisor's listener and each worker's /metrics sum (ADR 0023).
    with (
        tempfile.TemporaryDirectory(prefix="vetify-metrics-") as shared,
        _environment(scrape.MULTIPROCESS_DIR, shared),
        metrics_listener(settings),
    ):
        supervisor.supervise(
            settings.workers,
            functools.partial(_serve_worker, settings, sock),
            shutdown,
            ended=scrape.process_ended,
        )


@contextmanager
def metrics_listener(settings: Settings) -> Iterator[None]:
    """``VETIFY_METRICS_PORT``'s listener while the block runs, if one is configured."""
    try:
        listener = scrape.listen(settings)
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        raise server.PortUnavailable(f"cannot serve metrics on {where}: {exc.strerror}") from None
    try:
        yield
    finally:
        if listener is not None:
            listener.shutdown()
            listener.server_close()


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _serve_worker(
    settings: Settings,
    sock: socket.socket,
    index: int,
    shutdown: Shutdown,
    serving: Callable[[], None],
) -> None:
    """One of `vetify serve --workers N`'s processes (app/kit/supervisor.py); the first alone
    runs the in-process job worker, where there is one."""
    if index > 0:
        settings = settings.model_copy(update={"jobs_in_process": False})
    try:
        # Set up after the fork: the exporter's thread would not survive it.
        with tracing.traced():
            server.run(create_app(settings), settings, sock, shutdown, serving)
    except ConfigurationError as exc:
        # In one line, as `vetify serve` says it; the supervisor then stops the others.
        raise SystemExit(f"vetify serve: worker {index}: {exc}") from None


def _served_at(settings: Settings, host: str, port: int) -> Settings:
    """Unless VETIFY_PUBLIC_URL is set, the service is where --host and --port put it: the
    origin its pages (and the docs URL `vetify demo` prints) send cookie-authenticated
    requests from, and the base of the links it mails."""
    if "public_url" in settings.model_fields_set:
        return settings
    name = f"[{host}]" if ":" in host else host
    return settings.model_copy(update={"public_url": f"http://{name}:{port}"})


def _service_role(settings: Settings) -> str:
    """The role migrations grant the service's privileges to: its URL's, or, given only the
    owner's URL, the one `vetify db provision` makes."""
    if settings.database_url is None:
        return ROLES.app
    return migrate.role_of(settings.database_url.get_secret_value())


def _migrate(settings: Settings) -> None:
    if settings.database_url is not None and settings.database_owner_url is None:
        raise SystemExit("vetify migrate: set VETIFY_DATABASE_OWNER_URL (the schema owner's URL)")
    with _claimed(settings, f"vetify migrate (pid {os.getpid()})"), _at_head(settings):
        print("database schema is at head")


def _worker(settings: Settings) -> None:
    if settings.embedded:
        # Its PostgreSQL belongs to `vetify serve`, which runs the jobs itself.
        raise SystemExit(
            "vetify worker: set VETIFY_DATABASE_URL; on the embedded database `vetify serve`"
            " runs the jobs in its own process"
        )
    shutdown = Shutdown(settings.shutdown_timeout_seconds).install()
    with database(settings) as ready, metrics_listener(ready), tracing.traced():
        if not shutdown.requested:
            asyncio.run(_work(ready, shutdown))


async def _work(settings: Settings, shutdown: Shutdown) -> None:
    engine = create_engine(settings)
    counted = Usage()
    flusher = usage.flusher(engine, counted, settings).start()
    worker = Worker(settings, settings.shutdown_timeout_seconds * JOBS_SHARE, counted).start()
    try:
        await shutdown.wait()
        await worker.stop()
        await flusher.stop()  # the runs of the jobs that were stopping too
    finally:
        await engine.dispose()


def _check(settings: Settings, as_json: bool) -> None:
    """The dependency report of /health/dependencies, from this host: exit 1 when a required
    dependency is down (for cron and uptime checks)."""
    if settings.embedded:
        raise SystemExit(
            "vetify check: set VETIFY_DATABASE_URL (the embedded database is `vetify serve`'s;"
            " ask its /health/dependencies instead)"
        )
    found = asyncio.run(_dependency_report(settings))
    if as_json:
        print(json.dumps(found.as_json(), indent=2), flush=True)
    else:
        print(_table(found), flush=True)
    if found.status is Status.down:
        raise SystemExit(1)


async def _dependency_report(settings: Settings) -> Report:
    engine = create_engine(settings)
    redis = (
        Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2)
        if settings.redis_url
        else None
    )
    state = SimpleNamespace(
        settings=settings,
        engine=engine,
        redis=redis,
        storage=storage_from(settings),
        dependency_probes=dependency_probes(settings),
    )
    try:
        return await health.dependency_report_of(state)
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


def _table(found: Report) -> str:
    lines = [f"{'dependency':<10} {'status':<15} {'latency':>10}  detail"]
    for name, finding in found.findings.items():
        latency = "" if finding.latency_ms is None else f"{finding.latency_ms:.1f} ms"
        name_shown = f"{name}*" if finding.required else name
        detail = finding.detail or ""
        lines.append(f"{name_shown:<10} {finding.status.value:<15} {latency:>10}  {detail}")
    lines.append(f"overall: {found.status.value}  (* required)")
    return "\n".join(lines)


def _billing(settings: Settings, args: argparse.Namespace) -> None:
    with _claimed(settings, f"vetify billing (pid {os.getpid()})"), database(settings) as ready:
        print(asyncio.run(operations.run(ready, args)), flush=True)


def _usage(settings: Settings, args: argparse.Namespace) -> None:
    """Per clinic: requests and jobs over the days asked, storage now (as the backup role, which
    reads every clinic; the service's role sees one at a time)."""
    first, last = usage_report.window(args.day, args.days)
    with _as_roles(settings, "usage", "backup") as (backup,):
        found = asyncio.run(usage_report.report(backup, first, last))
    print(usage_report.printable(found, args.json), flush=True)


DRY_RUN = "a dry run: nothing was removed (--apply removes)"
_ROLE_URLS = {
    "backup": (
        "database_backup_url",
        "VETIFY_DATABASE_BACKUP_URL (the backup role's URL, which reads every clinic;"
        " `vetify db provision` printed it)",
    ),
    "owner": ("database_owner_url", "VETIFY_DATABASE_OWNER_URL (the schema owner's URL)"),
}


@contextmanager
def _as_roles(settings: Settings, command: str, *roles: str) -> Iterator[list[str]]:
    """For an operator's command: the database claimed and ready, and the URLs of ``roles``
    (``backup``, ``owner``), or why not."""
    holder = f"vetify {command.split()[0]} (pid {os.getpid()})"
    with _claimed(settings, holder), database(settings) as ready:
        yield [_url_of(ready, role, command) for role in roles]


def _url_of(ready: Settings, role: str, command: str) -> str:
    """The URL of an operator's role (the embedded database's are made for it), or why not."""
    field, setting = _ROLE_URLS[role]
    url: SecretStr | None = getattr(ready, field)
    if url is None:
        raise SystemExit(f"vetify {command}: set {setting}")
    return url.get_secret_value()


def _audit(settings: Settings, args: argparse.Namespace) -> None:
    """``verify``: recompute every clinic's audit chain (or ``--clinic``'s) as the backup role,
    held to its anchors; exit 1 at the first broken one. ``anchor``: sign each clinic's head
    not yet anchored, store it as the owner, print it as a JSON line (ADR 0027)."""
    if args.audit_command == "anchor":
        _anchor(settings)
        return
    if args.audit_command == "prune":
        _prune(settings, apply=args.apply)
        return
    if args.audit_command == "security-events":
        _security_events(settings, args.since)
        return
    outside = _anchors_in(args.anchors)
    public = _anchors_key(settings)
    with _as_roles(settings, "audit verify", "backup") as (backup,):
        retention = dt.timedelta(days=settings.audit_retention_days)
        verdicts = asyncio.run(audit.verify_trails(backup, args.clinic, public, outside, retention))
    print(audit.printable(verdicts), flush=True)
    if public is None:
        print("anchors' signatures not checked: set VETIFY_AUDIT_PUBLIC_KEY", file=sys.stderr)
    if any(verdict.broken is not None for verdict in verdicts):
        raise SystemExit(1)


def _anchor(settings: Settings) -> None:
    if settings.audit_signing_key is None:
        raise SystemExit("vetify audit anchor: set VETIFY_AUDIT_SIGNING_KEY (ADR 0027)")
    key = Ed25519PrivateKey.from_private_bytes(
        key_bytes(settings.audit_signing_key.get_secret_value())
    )
    with _as_roles(settings, "audit anchor", "backup", "owner") as (backup, owner):
        made = asyncio.run(anchors.anchor_trails(backup, owner, key))
    for anchor in made:
        print(anchor.line(), flush=True)


def _retention(settings: Settings, *, apply: bool) -> None:
    """Sessions, tokens, account links and invitations of no more use, removed; clients
    inactive past their clinic's policy, erased (issue 20, ADR 0031); medical records kept
    past their clinic's policy, removed (ADR 0035); clinics that left, deleted (ADR 0037)."""
    now = utcnow()
    cutoff = now - dt.timedelta(days=settings.retention_expired_days)
    with _as_roles(settings, "retention", "backup", "owner") as (backup, owner):
        found = asyncio.run(auth_retention.purge(backup, owner, cutoff, apply=apply))
        storage = storage_from(settings)
        inactive = asyncio.run(
            client_retention.apply_policies(backup, owner, storage, now, apply=apply)
        )
        expired = asyncio.run(
            client_retention.remove_records(
                backup, owner, storage, now, settings.record_minimum_years, apply=apply
            )
        )
        after = dt.timedelta(days=settings.clinic_deletion_days)
        departed = asyncio.run(
            departure.delete_departed(backup, owner, storage, now, after, apply=apply)
        )
    for purged in found:
        print(purged.line(applied=apply), flush=True)
    for clinic in inactive:
        print(clinic.line(applied=apply), flush=True)
    for kept in expired:
        print(kept.line(applied=apply), flush=True)
    for gone in departed:
        print(gone.line(applied=apply), flush=True)
    if not apply:
        print(DRY_RUN, file=sys.stderr)


def _clinic(settings: Settings, args: argparse.Namespace) -> None:
    """``export``: one clinic's archive, to a file; ``restore``: one clinic's rows merged back
    from a copy of the database at a time (ADR 0041)."""
    if args.clinic_command == "export":
        _clinic_export(settings, args.clinic, args.out)
        return
    try:
        with ExitStack() as stack:
            if args.source_url is not None:
                copy, said = args.source_url, "the copy at --from"
            else:
                copy, said = stack.enter_context(backup_commands.copy_at(settings, args.to))
            (owner,) = stack.enter_context(_as_roles(settings, "clinic restore", "owner"))
            report = asyncio.run(
                restore.restore_clinic(
                    owner,
                    copy,
                    said,
                    args.clinic,
                    storage_from(settings),
                    missing_only=args.missing_only,
                    apply=args.apply,
                )
            )
    except (restore.RestoreRefused, BackupError, OSError, SQLAlchemyError) as exc:
        # A database's error (the copy unreachable, a constraint broken) as the driver said it.
        raise SystemExit(f"vetify clinic restore: {getattr(exc, 'orig', None) or exc}") from None
    if args.json:
        print(json.dumps(report.as_json(), indent=2), flush=True)
    else:
        print("\n".join(report.lines()), flush=True)


def _clinic_export(settings: Settings, clinic_id: uuid.UUID, out: Path) -> None:
    try:
        out.touch(mode=0o600, exist_ok=False)  # every client's details: for this user alone
    except OSError as exc:
        raise SystemExit(f"vetify clinic export: {exc}") from None
    try:
        keys.configure(keys.wrapper_from(settings))  # sealed values are opened
        holder = f"vetify clinic export (pid {os.getpid()})"
        with _claimed(settings, holder), database(settings) as ready:
            asyncio.run(_exported(ready, clinic_id, out))
    except LookupError as exc:
        out.unlink()
        raise SystemExit(f"vetify clinic export: {exc.args[0]}") from None
    except BaseException:
        out.unlink()
        raise
    print(f"clinic {clinic_id}: {out} ({out.stat().st_size / 1e6:.1f} MB)", flush=True)


async def _exported(settings: Settings, clinic_id: uuid.UUID, out: Path) -> None:
    engine = create_engine(settings)
    try:
        await archive.export(async_sessionmaker(engine), clinic_id, storage_from(settings), out)
    finally:
        await engine.dispose()


def _prune(settings: Settings, *, apply: bool) -> None:
    """The audit trail's events past the retention, pruned (ADR 0027)."""
    cutoff = utcnow() - dt.timedelta(days=settings.audit_retention_days)
    with _as_roles(settings, "audit prune", "backup", "owner") as (backup, owner):
        found = asyncio.run(retention.prune_trails(backup, owner, cutoff, apply=apply))
    for pruned in found:
        if pruned.events or pruned.waiting:
            print(pruned.line(cutoff, applied=apply), flush=True)
    if not apply:
        print(DRY_RUN, file=sys.stderr)


def _security_events(settings: Settings, since: dt.datetime | None) -> None:
    moment = since or utcnow() - dt.timedelta(days=1)
    if moment.tzinfo is None:
        raise SystemExit(
            "vetify audit security-events: --since needs its offset (2026-12-06T00:00Z)"
        )

    async def printed(backup: str) -> None:
        async for line in security.lines_since(backup, moment):
            print(line, flush=True)

    with _as_roles(settings, "audit security-events", "backup") as (backup,):
        asyncio.run(printed(backup))


def _anchors_in(path: Path | None) -> list[anchors.Anchor]:
    if path is None:
        return []
    try:
        return anchors.read_lines(path.read_text(encoding="utf-8").splitlines())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"vetify audit verify: --anchors {path}: {exc}") from None


def _anchors_key(settings: Settings) -> Ed25519PublicKey | None:
    if settings.audit_public_key is not None:
        return Ed25519PublicKey.from_public_bytes(key_bytes(settings.audit_public_key))
    if settings.audit_signing_key is not None:
        private = key_bytes(settings.audit_signing_key.get_secret_value())
        return Ed25519PrivateKey.from_private_bytes(private).public_key()
    return None


def _keys(settings: Settings, args: argparse.Namespace) -> None:
    """``rotate-kek``: wrap every data key again with the active key-encryption key (the first
    of VETIFY_ENCRYPTION_KEYS, or VETIFY_KMS_KEY_ID). ``rotate-dek``: seal a scope's values
    again, and its files in storage, with a new data key. As the schema's owner (ADR 0028)."""
    wrapper = keys.wrapper_from(settings)
    with _as_roles(settings, "keys", "owner") as (owner,):
        if args.keys_command == "rotate-dek":
            scope = keys.PLATFORM if args.clinic is None else str(args.clinic)
            storage = storage_from(settings)
            done = asyncio.run(
                rotation.rotate_dek(owner, wrapper, storage, scope, retire=args.retire)
            )
        else:
            count = asyncio.run(keys.rotate_all(owner, wrapper))
    if args.keys_command == "rotate-kek":
        print(f"{count} data keys wrapped again; all are wrapped by {wrapper.active}", flush=True)
        return
    print(
        f"{done.scope}: {done.resealed} values and {done.files} files sealed again with data key"
        f" {done.version};"
        f" {done.left} left on older keys" + (f"; retired {done.retired}" if done.retired else ""),
        flush=True,
    )
    if done.too_soon:
        print(
            f"older keys kept: the new one is younger than {rotation.settled_after():.0f} s, and a"
            " process may still seal with an older one; run --retire again later",
            flush=True,
        )
    if done.left:
        raise SystemExit(
            f"vetify keys rotate-dek: {done.left} values or files are on an older key: sealed"
            " meanwhile (processes read the new one within"
            f" {keys.CURRENT_FOR_SECONDS:.0f} s), or files missing from storage (see the log):"
            " run again"
        )


def _provision(args: argparse.Namespace) -> None:
    """Make the database and its roles (``--admin-url``: a superuser's or the managed service
    administrator's), or print the SQL that does (``--sql``, the URLs then on stderr)."""
    roles = provision.Roles(args.owner_role, args.app_role, args.backup_role)
    passwords = {role: secrets.token_urlsafe(24) for role in roles.names}
    plan = provision.Provisioning(args.database, roles, passwords)
    if args.sql:
        print(plan.script(), end="", flush=True)
        print(_configuration(plan, args.admin_url, set(roles.names), done=False), file=sys.stderr)
        return
    if args.admin_url is None:
        raise SystemExit("vetify db provision: give --admin-url (or --sql to print the SQL)")
    try:
        created = provision.provision_sync(args.admin_url, plan)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"vetify db provision: {exc}") from None
    print(_configuration(plan, args.admin_url, created, done=True))


def _configuration(
    plan: provision.Provisioning, admin_url: str | None, created: set[str], *, done: bool
) -> str:
    """The URLs to configure, with the passwords of the roles ``created``."""
    where = make_url(admin_url or "postgresql://HOST:5432")

    def url(role: str, driver: str) -> str:
        return URL.create(
            driver,
            username=role,
            password=plan.passwords[role] if role in created else None,
            host=where.host,
            port=where.port,
            database=plan.database,
        ).render_as_string(hide_password=False)

    kept = [role for role in plan.roles.names if role not in created]
    return "\n".join(
        [
            f"# database {plan.database} "
            + ("is ready" if done else "is ready once the script has run")
            + "; configure Vetify with (each password is shown once):",
            f"VETIFY_DATABASE_OWNER_URL={url(plan.roles.owner, 'postgresql+asyncpg')}",
            f"VETIFY_DATABASE_URL={url(plan.roles.app, 'postgresql+asyncpg')}",
            f"# backup role (pg_dump): {url(plan.roles.backup, 'postgresql')}",
            *([f"# existing roles keep their passwords: {', '.join(kept)}"] if kept else []),
        ]
    )


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
        command.add_argument(
            "--workers",
            type=int,
            help="processes serving the socket (default VETIFY_WORKERS, 1); above 1 needs"
            " VETIFY_REDIS_URL",
        )
        if name == "serve":
            command.add_argument("--demo", action="store_true", help="seed the demo clinic")
    commands.add_parser("migrate", help="apply database migrations (as the schema owner)")
    commands.add_parser("worker", help="run background jobs (the procrastinate worker)")
    check = commands.add_parser(
        "check",
        help="report each dependency's state and latency; exit 1 if a required one is down",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    operations.add_commands(
        commands.add_parser("billing", help="Stripe events: list, metrics, replay")
    )
    usage_report.add_arguments(
        commands.add_parser(
            "usage",
            help="per clinic: requests and jobs per UTC day (flushed by each process every"
            " VETIFY_USAGE_FLUSH_SECONDS) and storage bytes now, for cost monitoring",
        )
    )
    retaining = commands.add_parser(
        "retention",
        help="remove sessions and tokens expired or revoked, account links used or expired and"
        " invitations settled, VETIFY_RETENTION_EXPIRED_DAYS ago or more, and erase clients"
        " inactive for longer than their clinic's policy; without --apply, only count them",
    )
    retaining.add_argument(
        "--apply", action="store_true", help="remove and erase them (default: dry run)"
    )
    audit_command = commands.add_parser(
        "audit", help="the audit trail: verify, anchor, prune, security-events"
    )
    audit_commands = audit_command.add_subparsers(dest="audit_command", required=True)
    verifying = audit_commands.add_parser(
        "verify",
        help="recompute each clinic's hash chain of audit events; report the first broken link"
        " and exit 1 if there is one",
    )
    verifying.add_argument("--clinic", type=uuid.UUID, help="only this clinic's (its id)")
    verifying.add_argument(
        "--anchors",
        type=Path,
        help="anchors kept outside the database (`vetify audit anchor`'s lines): a trail must"
        " hold them too",
    )
    audit_commands.add_parser(
        "anchor",
        help="sign each clinic's trail head not yet anchored (VETIFY_AUDIT_SIGNING_KEY), store"
        " it, and print it as a JSON line to keep elsewhere; run it from cron",
    )
    pruning = audit_commands.add_parser(
        "prune",
        help="remove each clinic's events older than VETIFY_AUDIT_RETENTION_DAYS (their chain"
        " then starts after the last removed); without --apply, only say what would go",
    )
    pruning.add_argument("--apply", action="store_true", help="remove them (default: dry run)")
    listing = audit_commands.add_parser(
        "security-events",
        help="print the security events of no clinic (log-ins refused, accounts locked...) as"
        " JSON lines, oldest first; a clinic's are in its trail",
    )
    listing.add_argument(
        "--since",
        type=dt.datetime.fromisoformat,
        help="from this time on, with its offset (default: the last 24 hours)",
    )
    keys_command = commands.add_parser(
        "keys", help="field-level encryption's keys: rotate-kek, rotate-dek"
    )
    keys_commands = keys_command.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser(
        "rotate-kek",
        help="wrap every data key again with the active key-encryption key (the first of"
        " VETIFY_ENCRYPTION_KEYS, or VETIFY_KMS_KEY_ID); no encrypted field is rewritten",
    )
    rotating = keys_commands.add_parser(
        "rotate-dek",
        help="seal a scope's values again with a new data key, in batches, online and"
        " resumable: a clinic's (--clinic) or the platform's (users' second factors)",
    )
    rotating.add_argument("--clinic", type=uuid.UUID, help="this clinic's (default: platform)")
    rotating.add_argument(
        "--retire",
        action="store_true",
        help="then delete the scope's older keys, once no value names them",
    )
    backup_commands.add_commands(
        commands.add_parser(
            "backup", help="the database's backups: now, list, verify, restore, push, pull"
        )
    )
    clinic_command = commands.add_parser("clinic", help="one clinic's data: export, restore")
    clinic_commands = clinic_command.add_subparsers(dest="clinic_command", required=True)
    exporting = clinic_commands.add_parser(
        "export",
        help="write one clinic's archive (every row, sealed values opened, every file: the"
        " export its owner can ask for, ADR 0036) to a new file readable by this user alone;"
        " the clinic's trail records it",
    )
    exporting.add_argument("clinic", type=uuid.UUID, help="the clinic's id")
    exporting.add_argument("--out", type=Path, required=True, help="the zip file to write")
    restoring = clinic_commands.add_parser(
        "restore",
        help="bring one clinic's rows back as they were at a time, from a copy of the database"
        " at that time, without rolling back any other clinic: rows deleted since come back,"
        " rows changed since are written back, rows written since stay (docs/runbook.md);"
        " without --apply, only report what it would do",
    )
    restoring.add_argument("clinic", type=uuid.UUID, help="the clinic's id")
    source = restoring.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--to",
        type=backup_commands.moment,
        metavar="latest|TIME",
        help="the embedded database's backups, restored to this time into a scratch cluster",
    )
    source.add_argument(
        "--from",
        dest="source_url",
        metavar="URL",
        help="a copy already restored to that time (an external PostgreSQL's point-in-time"
        " restore by its provider): a role's URL that reads every table",
    )
    restoring.add_argument(
        "--missing-only",
        action="store_true",
        help="only bring back rows deleted since; leave changed rows as they are",
    )
    restoring.add_argument("--apply", action="store_true", help="restore (default: dry run)")
    restoring.add_argument("--json", action="store_true", help="print the report as JSON")
    db = commands.add_parser("db", help="an external PostgreSQL: provision")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    provisioning = db_commands.add_parser(
        "provision",
        help="create the database, its owner, service and backup roles and btree_gist (as a"
        " superuser or the managed service's administrator); print the URLs to configure",
    )
    provisioning.add_argument(
        "--admin-url",
        help="postgresql://ADMIN@HOST:PORT/postgres; its password may come from PGPASSWORD or"
        " ~/.pgpass instead. With --sql it only says where the printed URLs point",
    )
    provisioning.add_argument("--sql", action="store_true", help="print the SQL (psql) instead")
    for option, default in (
        ("--database", EMBEDDED_DATABASE),
        ("--owner-role", ROLES.owner),
        ("--app-role", ROLES.app),
        ("--backup-role", ROLES.backup),
    ):
        provisioning.add_argument(option, default=default, type=_plain_name)
    return root


def _plain_name(value: str) -> str:
    try:
        migrate.identifier(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    # Until the settings are read (and for `db provision`, which reads none): readable lines.
    logs.configure(LogFormat.text, "INFO")
    if args.command == "db":
        # Before the service is configured: it needs none of its settings.
        _provision(args)
        return
    settings: Settings | None = None
    try:
        given = {} if getattr(args, "workers", None) is None else {"workers": args.workers}
        settings = Settings(**given)
        # `vetify check` and `usage` print reports on stdout, for scripts: logs go to stderr.
        logs.configure(
            settings.logs_as,
            settings.log_level,
            to_stderr=args.command
            in ("check", "usage", "audit", "keys", "retention", "backup", "clinic"),
        )
        # Once per process, before any fork: sentry-sdk restarts its sending thread in each
        # of `serve`'s workers. Uncaught exceptions of any command are reported from here on.
        errors.configure(settings)
        if args.command != "migrate":
            tracing.exporter_name(os.environ)  # refused here, before anything starts
        if args.command == "migrate":
            _migrate(settings)
        elif args.command == "worker":
            _worker(settings)
        elif args.command == "check":
            _check(settings, args.json)
        elif args.command == "billing":
            _billing(settings, args)
        elif args.command == "usage":
            _usage(settings, args)
        elif args.command == "audit":
            _audit(settings, args)
        elif args.command == "retention":
            _retention(settings, apply=args.apply)
        elif args.command == "keys":
            _keys(settings, args)
        elif args.command == "backup":
            print(backup_commands.run(settings, args))
        elif args.command == "clinic":
            _clinic(settings, args)
        else:
            _serve(settings, args.host, args.port, demo=args.command == "demo" or args.demo)
    except (
        ConfigurationError,
        DataDirectoryInUse,
        server.PortUnavailable,
        supervisor.WorkerFailedToStart,
        tracing.TracingRefused,
    ) as exc:
        # Settings refused as they were read (at start-up, the app reports its own refusal).
        if isinstance(exc, ConfigurationError) and settings is None and _in_production():
            security_event(
                SecurityEvent.production_settings_refused,
                outcome="refused",
                settings=sorted(exc.problems),
            )
        # A refusal, in one line (a ConfigurationError: one per setting at fault, naming none
        # of their values), never a traceback.
        raise SystemExit(f"vetify {args.command}: {exc}") from None


def _in_production() -> bool:
    """Whether the process was started for production (its settings may not have been made:
    they are what was refused)."""
    return os.environ.get("VETIFY_ENV", "").strip().lower() == Environment.production


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
