"""Point-in-time recovery from a :class:`Repository`, and ``backup verify``, which restores the
latest into a scratch cluster and checks it (ADR 0039).

A restore either ends with a whole cluster, recovered to the time asked for (or to the last
archived write), or raises :class:`BackupError` and leaves nothing behind: a damaged base backup
is refused by its manifest before it is unpacked, and a restore "to latest" that stopped short of
the archive's end (a segment missing or corrupt stops PostgreSQL's replay as if the WAL ended
there) is refused after replay, instead of being started as if nothing were lost.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from app.backup.repository import (
    BackupError,
    BaseBackup,
    Repository,
    lsn,
    newest,
    scalar,
    segment_name,
    segment_number,
)
from app.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from app.db.migrate import head_revisions

RECOVERY_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class Restored:
    target: Path
    base: BaseBackup
    stopped_at: str
    """The LSN where replay ended, and the new timeline began."""
    reason: str
    """PostgreSQL's word for why it stopped (a target time, or the end of the archive)."""
    seconds: float


def restore(
    repository: Repository,
    target: Path,
    to: dt.datetime | None,
    *,
    archive: dict[str, str] | None,
) -> Restored:
    """Restore into the new cluster directory ``target`` the state at ``to`` (None: the last
    archived write), and leave it stopped. ``archive``: the restored server's archiving (the
    repository's, so that its new timeline is archived from its first segment: only for the
    cluster that takes the lost one's place), or None for a copy, which must not write into
    the repository (a later restore "to latest" would follow the copy's timeline)."""
    with _recovered(repository, target, to, archive) as (_, restored):
        return restored


@contextlib.contextmanager
def _recovered(
    repository: Repository,
    target: Path,
    to: dt.datetime | None,
    archive: dict[str, str] | None,
) -> Iterator[tuple[EmbeddedPostgres, Restored]]:
    """The restored cluster, running (on a private socket) for the block, then stopped."""
    began = time.monotonic()
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty: restore into a new directory")
    base = newest(repository.backups(), to)
    repository.verify_files(base)
    archived = repository.segments()  # before replay: a live server may archive more meanwhile
    timeline = repository.newest_timeline()
    options = {
        "restore_command": repository.restore_command(),
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
        **(archive or {"archive_mode": "off"}),
    }
    if to is not None:
        options["recovery_target_time"] = to.isoformat()
    server = EmbeddedPostgres(target, options=options)
    try:
        _unpack(repository.base / base.label, target)
        server.owns(target, tree=True)
        # The server reads the archive: copied back by another user (from off the machine),
        # its files would be refused to it, and replay would end at the base backup's end.
        server.owns(repository.wal, tree=True)
        (target / "recovery.signal").touch()
        # Replay fetches the archive's timeline histories too: the new one is in neither.
        known = {path.name for path in (target / "pg_wal").glob("*.history")} | {
            path.name for path in repository.wal.glob("*.history")
        }
        # A start that fails (replay refused before it was consistent) is judged as one that
        # stops later (replay refused after): by the new timeline it did not begin.
        with contextlib.suppress(EmbeddedPostgresError):
            server.start()
        parent, stopped_at, reason = _replayed(server, target, known)
        if to is None:
            _whole(archived, base.segment_bytes, parent, stopped_at)
        if archive:
            # The new timeline's history in the archive before the server stops: a later
            # restore follows the timeline only from there, and the archiver copies it in its
            # own time (a CI run saw a stop come first).
            history = _new_histories(target, known)[-1].name
            _until(f"{history} archived", lambda: (repository.wal / history).exists(), 60.0)
        restored = Restored(target, base, stopped_at, reason, time.monotonic() - began)
        yield server, restored
        server.stop()
    except BaseException:
        server.destroy()
        if archive:
            # Stopped: what it archived of its new timeline goes too, or the next restore
            # would follow that timeline to where this one stopped.
            repository.forget_timelines_after(timeline)
        raise


def _unpack(backup: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for tarball, into in (("base.tar.gz", target), ("pg_wal.tar.gz", target / "pg_wal")):
        with tarfile.open(backup / tarball) as archive:
            # Our own backup, its files checked against the manifest; and, on Python >= 3.11.4,
            # the filter keeps every member inside ``into``.
            archive.extractall(into, **_FILTER)  # type: ignore[arg-type]  # noqa: S202  # nosec B202
    target.chmod(0o700)


_FILTER = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


def _replayed(server: EmbeddedPostgres, target: Path, known: set[str]) -> tuple[int, str, str]:
    """Wait out the replay, until the server has begun a new timeline (or has stopped: the
    replay failed); that timeline's switch: the timeline replayed, the LSN where replay stopped,
    PostgreSQL's reason."""
    _until(
        "recovery",
        lambda: not server.is_running() or bool(_new_histories(target, known)),
        RECOVERY_SECONDS,
    )
    new = _new_histories(target, known)
    if not new:
        raise BackupError(f"recovery failed: {_fatal(target) or 'the server stopped'}")
    parent, stopped_at, reason = new[-1].read_text().strip().splitlines()[-1].split("\t", 2)
    return int(parent), stopped_at, reason


def _new_histories(target: Path, known: set[str]) -> list[Path]:
    """Timeline histories the server wrote (the new timeline's is written whole, by rename)."""
    return sorted(path for path in (target / "pg_wal").glob("*.history") if path.name not in known)


def _until(what: str, done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise BackupError(f"{what} still running after {seconds:.0f} s")
        time.sleep(0.1)


def _whole(segments: list[str], size: int, timeline: int, stopped_at: str) -> None:
    """A restore to the latest reached the end of the archive (``segments``): replay stops at a
    missing or corrupt segment as if the WAL ended there, and everything after it would be lost
    silently."""
    stopped = lsn(stopped_at) // size
    archived = [name for name in segments if int(name[:8], 16) == timeline]
    if archived and segment_number(archived[-1], size) > stopped:
        raise BackupError(
            f"replay stopped at {stopped_at}, in segment"
            f" {segment_name(timeline, lsn(stopped_at), size)}, but the archive holds WAL up"
            f" to {archived[-1]}: a segment after the one replay stopped in is missing, or"
            " that one is corrupt. Restoring to the latest would lose what follows: restore"
            " to a time before the gap (--to), or put the segment back"
        )


def _fatal(target: Path) -> str:
    """The server's last FATAL message (its log is made by the start that failed)."""
    log = (target / "server.log").read_text(errors="replace")
    lines = [line for line in log.splitlines() if "FATAL" in line]
    return lines[-1].split("FATAL:", 1)[-1].strip() if lines else ""


@dataclass(frozen=True)
class Verified:
    base: BaseBackup
    stopped_at: str
    seconds: float
    schema: str
    rows: dict[str, int]


@contextlib.contextmanager
def scratch(
    repository: Repository, to: dt.datetime | None
) -> Iterator[tuple[EmbeddedPostgres, Restored]]:
    """The state at ``to`` (None: the latest) restored into a scratch cluster (not archived),
    running for the block on a private socket; then stopped and removed."""
    directory = Path(tempfile.mkdtemp(prefix="vetify-scratch-"))
    try:
        with _recovered(repository, directory / "pgdata", to, None) as recovered:
            yield recovered
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def verify(repository: Repository, database: str) -> Verified:
    """Restore the latest into a scratch cluster, check that ``database`` is at the migrations'
    head and count each table's rows."""
    with scratch(repository, None) as (server, restored):
        with psycopg.connect(server.url(database=database, driver="")) as connection:
            revisions = {row[0] for row in connection.execute(_REVISIONS)}
            rows = {
                f"{schema}.{table}": int(scalar(connection, _count(schema, table)))
                for schema, table in connection.execute(_TABLES).fetchall()
            }
        if revisions != set(head_revisions()):
            raise BackupError(
                f"the restored schema is at {sorted(revisions)}, not at this version's"
                f" head {sorted(head_revisions())}"
            )
    return Verified(
        restored.base, restored.stopped_at, restored.seconds, ",".join(sorted(revisions)), rows
    )


_REVISIONS = "SELECT version_num FROM alembic_version"
_TABLES = (
    "SELECT schemaname, tablename FROM pg_tables"
    " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
)


def _count(schema: str, table: str) -> sql.Composed:
    return sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
