"""The embedded database's backups as `vetify` runs them: its archiving, `backup now` (a base
backup, then the retention policy), the repository's state for `backup list` and metrics."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

import psycopg

from app.backup.repository import BackupError, BaseBackup, Pruned, Repository, scalar
from app.db.embedded import EmbeddedPostgres
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


def now(settings: Settings, server: EmbeddedPostgres) -> Taken:
    """A base backup of the running ``server``; then what the retention window no longer
    needs goes."""
    archive = repository(settings)
    with archive.locked():
        backup = archive.take(server.url(driver=""))
        window = dt.timedelta(days=settings.backup_retention_days)
        return Taken(backup, archive.prune(window, utcnow()))


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
        taken = now(settings, server)
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


@dataclass(frozen=True)
class State:
    backups: list[BaseBackup]
    segments: int
    last_archived: dt.datetime | None


def state(settings: Settings) -> State:
    archive = repository(settings)
    return State(archive.backups(), len(archive.segments()), archive.last_archived())
