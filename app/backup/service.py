"""Backups as `vetify` runs them: the embedded database's archiving, or an external one's as
documented (docs/runbook.md), `backup now` (a base backup, then the retention policy), the
repository's state for `backup list` and metrics."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from app.backup.offsite import Offsite
from app.backup.repository import (
    BackupError,
    BaseBackup,
    Outcome,
    Pruned,
    Repository,
    scalar,
)
from app.db.embedded import EmbeddedPostgres, major
from app.kit.clock import utcnow
from app.settings import Settings

log = logging.getLogger("vetify")

WAL_SEGMENT_MIB = 1
"""The embedded cluster's WAL segments (made at initdb): a segment archived by the timeout
before it is full still takes its whole size, so small ones keep a quiet day's archive small."""


def repository(settings: Settings) -> Repository:
    return Repository(settings.backups_root)


def embedded(settings: Settings) -> EmbeddedPostgres:
    """The embedded cluster, archiving every WAL segment into the repository."""
    archive = repository(settings)
    server = EmbeddedPostgres(
        settings.data_dir / "pgdata",
        options=archive.server_options(settings.backup_archive_timeout_seconds),
        wal_segment_mib=WAL_SEGMENT_MIB,
    )
    archive.wal.mkdir(parents=True, exist_ok=True, mode=0o700)
    server.owns(archive.wal)  # written by the server itself
    return server


@dataclass(frozen=True)
class Taken:
    backup: BaseBackup
    pruned: Pruned


def now(settings: Settings, conninfo: str) -> Taken:
    """A base backup of the running server at ``conninfo``, once it is seen to archive into
    the repository; then what the retention window no longer needs goes; then, if configured,
    the repository is copied off the machine."""
    archive = repository(settings)
    checked(archive, conninfo)
    with archive.locked():
        backup = archive.take(conninfo)
        taken = Taken(backup, archive.prune(_window(settings), utcnow()))
    if settings.backup_s3_bucket:
        try:
            push(settings)
        except BackupError as exc:
            raise BackupError(
                f"base backup {backup.label} taken, but its copy off the machine failed: {exc}"
            ) from None
    return taken


def push(settings: Settings) -> Pruned:
    """The repository copied off the machine (what the copy lacks), the retention window
    applied to both first and to the copy after (what one removed, the other does not bring
    back); the outcome recorded either way (the metrics' and alerts')."""
    archive, copy = repository(settings), Offsite(settings)
    with archive.locked():
        try:
            archive.prune(_window(settings), utcnow())
            copy.push(archive)
            pruned = copy.prune(_window(settings), utcnow())
        except BackupError as exc:
            archive.record_push(Outcome(utcnow(), False, str(exc)))
            raise
        archive.record_push(Outcome(utcnow(), True, copy.where))
    return pruned


def _window(settings: Settings) -> dt.timedelta:
    return dt.timedelta(days=settings.backup_retention_days)


def ensure_base(
    settings: Settings, server: EmbeddedPostgres, *, wait: bool
) -> threading.Thread | None:
    """A base backup, if the running ``server`` has none on its timeline: at once, or, for a
    server about to serve (``wait`` false), in a thread of its own, so that a restored database
    serves before its first base backup (minutes, for gigabytes) is taken."""
    if not needs_base(settings, server):
        return None
    if wait:
        _base(settings, server)
        return None
    thread = threading.Thread(
        target=_base, args=(settings, server), name="vetify-base-backup", daemon=True
    )
    thread.start()
    return thread


def _base(settings: Settings, server: EmbeddedPostgres) -> None:
    try:
        taken = now(settings, server.url(driver=""))
    except (BackupError, psycopg.Error, OSError) as exc:
        # VetifyBackupTooOld follows; the next `vetify backup now` tries again.
        log.error("the base backup of the database's timeline failed: %s", exc)
        return
    log.info("a base backup on the database's timeline: %s", taken.backup.label)


def needs_base(settings: Settings, server: EmbeddedPostgres) -> bool:
    """Whether the running ``server`` has no base backup on its timeline: none yet (the
    archive restores nothing without one), or none since a restore began a new timeline."""
    backups = repository(settings).backups()
    if not backups:
        return True
    with psycopg.connect(server.url(driver="")) as connection:
        current = str(scalar(connection, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
    return backups[-1].timeline != int(current[:8], 16)


def external(settings: Settings) -> tuple[str, str]:
    """An external database's backup role (``VETIFY_DATABASE_BACKUP_URL``) as a libpq URL, and
    the database's name; or why not."""
    if settings.database_backup_url is None:
        raise BackupError(
            "set VETIFY_DATABASE_BACKUP_URL (the backup role's, which `vetify db provision`"
            " printed and made able to take a base backup)"
        )
    url = make_url(settings.database_backup_url.get_secret_value())
    return url.set(drivername="postgresql").render_as_string(hide_password=False), str(url.database)


_ARCHIVING = (
    "SELECT current_setting('archive_mode'), current_setting('archive_library'),"
    " current_setting('basic_archive.archive_directory', true),"
    " current_setting('server_version_num')::int / 10000,"
    " (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
)


def checked(archive: Repository, conninfo: str) -> None:
    """The server at ``conninfo`` archives its WAL into ``archive`` (without it, a base backup
    restores to nothing after its end), runs the major version of the tools that restore it,
    and lets this role take a base backup."""
    with psycopg.connect(conninfo) as connection:
        row = connection.execute(_ARCHIVING).fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM answers one row
        raise BackupError("the database did not say how it archives")
    mode, library, directory, version, replication = row
    wanted = archive.server_options(60)
    if (mode, library, directory) != (
        "on",
        wanted["archive_library"],
        wanted["basic_archive.archive_directory"],
    ):
        raise BackupError(
            f"the database does not archive its WAL into {archive.wal} (archive_mode {mode},"
            f" archive_library {library!r}, basic_archive.archive_directory"
            f" {directory!r}): set archive_mode = on, archive_library = 'basic_archive'"
            f" and basic_archive.archive_directory = '{archive.wal}' in its postgresql.conf"
            " (docs/runbook.md)"
        )
    if version != major():
        raise BackupError(
            f"the database runs PostgreSQL {version}; Vetify's backup tools are PostgreSQL"
            f" {major()}'s, and restore only that version"
        )
    if not replication:
        raise BackupError(
            "the backup role may not take a base backup: ALTER ROLE ... REPLICATION (and a"
            " replication line for it in pg_hba.conf), or run `vetify db provision` as a"
            " superuser"
        )


@dataclass(frozen=True)
class State:
    backups: list[BaseBackup]
    segments: int
    last_archived: dt.datetime | None


def state(settings: Settings) -> State:
    return state_of(repository(settings))


def state_of(archive: Repository) -> State:
    return State(archive.backups(), len(archive.segments()), archive.last_archived())
