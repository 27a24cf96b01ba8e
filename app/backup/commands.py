"""`vetify backup`: now, list, verify, restore (docs/runbook.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg

from app.backup import offsite, service
from app.backup.offsite import Offsite
from app.backup.repository import BackupError, Outcome, Repository
from app.backup.restore import Verified, restore, scratch, verify
from app.db.embedded import DATABASE, DataDirectoryInUse, EmbeddedPostgres, claim
from app.kit.clock import utcnow
from app.settings import Settings


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="backup_command", required=True)
    commands.add_parser(
        "now",
        help="take a base backup of the embedded database (running or not), then remove what"
        " VETIFY_BACKUP_RETENTION_DAYS no longer needs; run it daily from cron",
    )
    listing = commands.add_parser("list", help="the base backups and the WAL archive")
    listing.add_argument("--json", action="store_true", help="print it as JSON")
    checking = commands.add_parser(
        "verify",
        help="restore the latest into a scratch cluster, check its schema and count its rows;"
        " exit 1 if it cannot be restored",
    )
    checking.add_argument("--json", action="store_true", help="print the report as JSON")
    checking.add_argument(
        "--offsite",
        action="store_true",
        help="verify the copy off the machine instead: pull it into a scratch repository"
        " (which proves VETIFY_BACKUP_ENCRYPTION_KEY opens it), then restore and check that",
    )
    commands.add_parser(
        "push",
        help="copy the repository off the machine (VETIFY_BACKUP_S3_BUCKET), encrypted with"
        " VETIFY_BACKUP_ENCRYPTION_KEY, then apply the retention window to that copy; run it"
        " from cron every few minutes (`now` pushes too)",
    )
    pulling = commands.add_parser(
        "pull",
        help="copy the repository back from off the machine (a new machine's first step),"
        " into an empty VETIFY_BACKUP_DIR or --into DIR",
    )
    pulling.add_argument("--into", type=Path, help="the directory (default: VETIFY_BACKUP_DIR)")
    restoring = commands.add_parser(
        "restore",
        help="restore the embedded database as it was at a time (or at its last archived"
        " write) into a data directory with no cluster in it",
    )
    restoring.add_argument(
        "--to",
        type=moment,
        required=True,
        metavar="latest|TIME",
        help="'latest', or an ISO 8601 time with its offset (2026-12-07T09:30:00+01:00)",
    )
    restoring.add_argument(
        "--target",
        type=Path,
        help="the data directory (VETIFY_DATA_DIR) to restore into (default: the configured"
        " one, once its damaged pgdata is moved aside)",
    )


def moment(value: str) -> dt.datetime | None:
    if value == "latest":
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not 'latest' or an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no offset: add one (Z, +01:00...)")
    return moment


def run(settings: Settings, args: argparse.Namespace) -> str:
    signal.signal(signal.SIGTERM, _stopped)
    try:
        if args.backup_command == "now":
            with _source(settings) as conninfo:
                taken = service.now(settings, conninfo)
            return _taken(taken)
        if args.backup_command == "list":
            return _listed(service.state(settings), as_json=args.json)
        if args.backup_command == "push":
            pruned = service.push(settings)
            return (
                f"copied to {offsite.where(settings)}; removed from it (older than the"
                f" retention window): {len(pruned.backups)} base backups,"
                f" {pruned.segments} WAL segments"
            )
        if args.backup_command == "pull":
            into = Repository(args.into or settings.backups_root)
            Offsite(settings).pull(into)
            return f"pulled into {into.root}: {_listed(service.state_of(into), as_json=False)}"
        if args.backup_command == "verify":
            verified = (
                _verified_offsite(settings)
                if args.offsite
                else _verified(service.repository(settings), _database(settings))
            )
            report = {
                "base_backup": verified.base.label,
                "replayed_to": verified.stopped_at,
                "seconds": round(verified.seconds, 1),
                "schema": verified.schema,
                "rows": verified.rows,
            }
            if args.json:
                return json.dumps(report, indent=2)
            return (
                f"backup {verified.base.label} restored and replayed to {verified.stopped_at}"
                f" in {verified.seconds:.1f} s; schema at {verified.schema};"
                f" {sum(verified.rows.values())} rows in {len(verified.rows)} tables: OK"
            )
        if not settings.embedded and args.target is None:
            raise BackupError(
                "an external PostgreSQL's data directory is not Vetify's to replace: restore"
                " into a new one with --target DIR, then put it in place (docs/runbook.md)"
            )
        return _restore(settings, args.to, args.target or settings.data_dir)
    except (BackupError, psycopg.Error) as exc:  # the database unreachable: said in a line
        raise SystemExit(f"vetify backup {args.backup_command}: {exc}") from None


def _database(settings: Settings) -> str:
    """The name of the database backed up."""
    return DATABASE if settings.embedded else service.external(settings)[1]


@contextmanager
def _source(settings: Settings) -> Iterator[str]:
    """The database to take a base backup of, running: the embedded one (`vetify serve`'s, or
    started for the block), or the external one's backup role."""
    if not settings.embedded:
        yield service.external(settings)[0]
        return
    with _running(settings) as server:
        yield server.url(driver="")


@contextmanager
def copy_at(settings: Settings, to: dt.datetime | None) -> Iterator[tuple[str, str]]:
    """The database as it was at ``to`` (None: its last archived write), restored from the
    repository into a scratch cluster for the block: its superuser's URL, and what it is."""
    signal.signal(signal.SIGTERM, _stopped)
    repository = service.repository(settings)
    if not repository.backups():
        raise BackupError(
            f"no base backup in {repository.root}: restore the database to that time with"
            " its provider's tools and pass --from URL instead of --to"
        )
    with repository.locked(), scratch(repository, to) as (server, restored):
        yield (
            server.url(database=_database(settings)),
            f"backup {restored.base.label} replayed to {restored.stopped_at} ({restored.reason})",
        )


def _stopped(signum: int, _frame: object) -> None:
    """SIGTERM (a cron job's timeout, a stop) unwinds as an error does: a scratch or refused
    cluster, every clinic's data in it, is stopped and removed, not left running."""
    raise SystemExit(f"vetify backup: stopped by signal {signum}")


def _verified_offsite(settings: Settings) -> Verified:
    """``verify --offsite``: the copy pulled into a scratch repository and verified there."""
    scratch = Path(tempfile.mkdtemp(prefix="vetify-pulled-"))
    try:
        copy = Repository(scratch / "repository")
        Offsite(settings).pull(copy)
        return verify(copy, _database(settings))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _verified(repository: Repository, database: str) -> Verified:
    """``verify``, its outcome recorded in the repository either way."""
    try:
        verified = verify(repository, database)
    except BackupError as exc:
        repository.record_verification(Outcome(utcnow(), False, str(exc)))
        raise
    repository.record_verification(
        Outcome(utcnow(), True, f"{verified.base.label} to {verified.stopped_at}")
    )
    return verified


@contextmanager
def _running(settings: Settings) -> Iterator[EmbeddedPostgres]:
    """The embedded cluster, running: `vetify serve`'s if it serves, else started for the
    block."""
    server = service.embedded(settings)
    with ExitStack() as stack:
        try:
            stack.enter_context(claim(settings.data_dir, f"vetify backup (pid {os.getpid()})"))
        except DataDirectoryInUse:
            if not server.is_running():
                raise
        else:
            stack.callback(server.stop)
            server.start()
        yield server


def _restore(settings: Settings, to: dt.datetime | None, data_dir: Path) -> str:
    """Into the configured data directory: the cluster that takes the lost one's place, and
    archives its new timeline into the repository. Elsewhere: a copy to look at, which does
    not (its timeline would be followed by every later restore to the latest)."""
    repository = service.repository(settings)
    in_place = settings.embedded and data_dir.resolve() == settings.data_dir.resolve()
    with claim(data_dir, f"vetify backup restore (pid {os.getpid()})"), repository.locked():
        restored = restore(
            repository,
            data_dir / "pgdata",
            to,
            archive=(
                repository.server_options(settings.backup_archive_timeout_seconds)
                if in_place
                else None
            ),
        )
    done = (
        f"restored from base backup {restored.base.label} in {restored.seconds:.1f} s;"
        f" replay stopped at {restored.stopped_at} ({restored.reason}).\n"
    )
    if in_place:
        return done + "Start it with: vetify serve (it takes a base backup of its new timeline)"
    if not settings.embedded:
        return done + (
            f"To make it the database: stop its server, move its data directory aside, put"
            f" {data_dir / 'pgdata'} in its place (owned by the server's user), start it, then"
            " take a base backup of its new timeline: vetify backup now"
        )
    return done + (
        f"A copy, not archived into {repository.root}: look at it with VETIFY_DATA_DIR={data_dir}"
        " VETIFY_BACKUP_DIR=<an empty directory> vetify serve --port <another port>"
    )


def _taken(taken: service.Taken) -> str:
    backup = taken.backup
    return (
        f"base backup {backup.label}: {backup.size_bytes / 1e6:.1f} MB in"
        f" {(backup.finished - backup.started).total_seconds():.1f} s\n"
        f"removed (older than the retention window): {len(taken.pruned.backups)} base"
        f" backups, {taken.pruned.segments} WAL segments"
    )


def _listed(state: service.State, *, as_json: bool) -> str:
    now = utcnow()
    if as_json:
        return json.dumps(
            {
                "backups": [backup.as_json() for backup in state.backups],
                "wal_segments": state.segments,
                "last_archived": state.last_archived and state.last_archived.isoformat(),
            },
            indent=2,
        )
    lines = [f"{'label':<18} {'finished (UTC)':<20} {'size':>10}  WAL from"]
    lines += [
        f"{backup.label:<18} {backup.finished:%Y-%m-%d %H:%M:%S} {backup.size_bytes / 1e6:>8.1f} MB"
        f"  {backup.start_segment}"
        for backup in state.backups
    ] or ["(no base backup: vetify backup now)"]
    archived = (
        f"newest {(now - state.last_archived).total_seconds():.0f} s ago"
        if state.last_archived
        else "nothing archived yet"
    )
    lines.append(f"WAL archive: {state.segments} segments, {archived}")
    return "\n".join(lines)
