"""A backup repository on a file system: base backups taken by ``pg_basebackup`` and the WAL
archived by the server itself through PostgreSQL's ``basic_archive`` module (ADR 0039).

Layout under the repository's root (``VETIFY_BACKUP_DIR``, default ``VETIFY_DATA_DIR/backups``)::

    wal/                    every WAL segment and timeline history file, as the server archived it
    base/LABEL/             one base backup, as pg_basebackup wrote it: base.tar.gz, pg_wal.tar.gz
                            and backup_manifest (size and SHA-256 of every file: pg_verifybackup)
    base/LABEL.json         what we know of it, written last: a backup without it is not complete
    base/LABEL.partial/     a base backup being taken, or one whose taking died

Every tool here is PostgreSQL's own, of the server's version: nothing of ours ships WAL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shlex
import shutil

# Runs PostgreSQL's own client binaries with fixed argv, never a shell.
import subprocess  # nosec B404
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.abc import Query

from app.db.embedded import bin_dir
from app.kit.clock import utcnow

SEGMENT = re.compile(r"(?P<timeline>[0-9A-F]{8})(?P<log>[0-9A-F]{8})(?P<seg>[0-9A-F]{8})")
_SEGMENT_BYTES = "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
"""A WAL segment's size in bytes (``SHOW`` says "16MB", or "1GB")."""


class BackupError(RuntimeError):
    """A backup, a verification or a restore that did not succeed; the message says why and
    what to do, for an operator."""


@dataclass(frozen=True)
class BaseBackup:
    """One complete base backup, as ``backup.json`` describes it."""

    label: str
    started: dt.datetime
    finished: dt.datetime
    """Once ``pg_basebackup`` returned: the earliest time a restore from it can stop at."""
    size_bytes: int
    timeline: int
    start_lsn: str
    end_lsn: str
    segment_bytes: int
    server_version: str

    @property
    def start_segment(self) -> str:
        return segment_name(self.timeline, lsn(self.start_lsn), self.segment_bytes)

    def as_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
        }


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def segment_name(timeline: int, position: int, segment_bytes: int) -> str:
    """The WAL file holding ``position`` on ``timeline`` (as PostgreSQL's XLogFileName)."""
    number = position // segment_bytes
    per_log = 0x1_0000_0000 // segment_bytes
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def segment_number(name: str, segment_bytes: int) -> int:
    """The position of the segment ``name`` (an archive's, matched by :data:`SEGMENT`)."""
    return int(name[8:16], 16) * (0x1_0000_0000 // segment_bytes) + int(name[16:24], 16)


VERIFIED = "verified.json"
PUSHED = "pushed.json"
"""The last `vetify backup verify`'s outcome, for the metrics and their alerts."""


@dataclass(frozen=True)
class Outcome:
    """How a verification or a push went, and when; its detail (what or why)."""

    at: dt.datetime
    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Pruned:
    backups: list[str]
    segments: int


@dataclass(frozen=True)
class Repository:
    root: Path

    @property
    def wal(self) -> Path:
        return self.root / "wal"

    @property
    def base(self) -> Path:
        return self.root / "base"

    def server_options(self, archive_timeout_seconds: int) -> dict[str, str]:
        """The server's settings that archive every completed WAL segment into ``wal/``, and
        a partly filled one after ``archive_timeout_seconds`` (the most writes a loss of the
        server's disk can cost, when the repository is elsewhere)."""
        return {
            "archive_mode": "on",
            "archive_library": "basic_archive",
            "basic_archive.archive_directory": str(self.wal),
            "archive_timeout": f"{archive_timeout_seconds}s",
        }

    def restore_command(self) -> str:
        """For a recovering server: copy a file of the archive into place (``%f``, ``%p``:
        its name, where it goes; the server runs it through a shell, a ``%`` of the path
        written ``%%``)."""
        return f"cp {shlex.quote(str(self.wal).replace('%', '%%'))}/%f %p"

    # -- base backups ----------------------------------------------------------------------
    def backups(self) -> list[BaseBackup]:
        """Complete base backups, oldest first."""
        found = [read_backup(described) for described in self.base.glob("*.json")]
        return sorted(found, key=lambda backup: backup.finished)

    def take(self, conninfo: str) -> BaseBackup:
        """A base backup of the server at ``conninfo`` (a superuser or a role with
        REPLICATION), compressed, with its own WAL, and a SHA-256 manifest of every file."""
        started = utcnow()
        label = started.strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"  # to the millisecond
        partial = self.base / f"{label}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        with psycopg.connect(conninfo) as connection:
            version = str(scalar(connection, "SHOW server_version"))
            segment = int(scalar(connection, _SEGMENT_BYTES))
        run(
            "pg_basebackup",
            f"--dbname={conninfo}",
            f"--pgdata={partial}",
            "--format=tar",
            "--gzip",
            "--checkpoint=fast",
            "--manifest-checksums=SHA256",
            f"--label=vetify {label}",
            "--no-password",
        )
        # Newest timeline first in the manifest: order them by where they start.
        ranges = sorted(
            json.loads((partial / "backup_manifest").read_text())["WAL-Ranges"],
            key=lambda wal: lsn(wal["Start-LSN"]),
        )
        backup = BaseBackup(
            label=label,
            started=started,
            finished=utcnow(),
            size_bytes=sum(path.stat().st_size for path in partial.iterdir()),
            timeline=int(ranges[0]["Timeline"]),
            start_lsn=ranges[0]["Start-LSN"],
            end_lsn=ranges[-1]["End-LSN"],
            segment_bytes=segment,
            server_version=version,
        )
        partial.rename(self.base / label)
        _write_durably(self.base / f"{label}.json", json.dumps(backup.as_json(), indent=2))
        return backup

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """This repository for one writer at a time (a backup and its pruning, a restore that
        archives into it): an exclusive ``flock``, released however the process ends."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(self.root / "repository.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def verify_files(self, backup: BaseBackup) -> None:
        """Every file of the base backup is there, whole, as its manifest says (size and
        SHA-256): a truncated or altered backup is refused before anything is restored."""
        try:
            # WAL inside a tar-format backup is checked by the restore itself (-n).
            run("pg_verifybackup", "--quiet", "--no-parse-wal", str(self.base / backup.label))
        except BackupError as exc:
            raise BackupError(
                f"base backup {backup.label} is damaged, do not restore from it:\n{exc}"
            ) from None

    # -- the WAL archive -------------------------------------------------------------------
    def segments(self) -> list[str]:
        """The archived WAL segments' names, in order."""
        if not self.wal.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(self.wal) if SEGMENT.fullmatch(entry.name))

    def newest_timeline(self) -> int:
        """The newest timeline any archived file (segment, history, backup label) is of."""
        return max(
            (timeline for _, timeline in self._by_timeline()),
            default=0,
        )

    def forget_timelines_after(self, timeline: int) -> None:
        """Remove every archived file of a timeline after ``timeline``: what a refused restore
        archived, before its refusal."""
        for path, of in self._by_timeline():
            if of > timeline:
                path.unlink()

    def _by_timeline(self) -> list[tuple[Path, int]]:
        return [
            (path, int(path.name[:8], 16))
            for path in self.wal.glob("*")  # none if the directory is not there yet
            if re.match(r"[0-9A-F]{8}", path.name)
        ]

    def last_archived(self) -> dt.datetime | None:
        """When the newest segment (by position, then timeline) reached the archive."""
        segments = self.segments()
        if not segments:
            return None
        last = max(segments, key=lambda name: (name[8:], name[:8]))
        return dt.datetime.fromtimestamp((self.wal / last).stat().st_mtime, dt.UTC)

    # -- the last verification -------------------------------------------------------------
    def record_verification(self, verification: Outcome) -> None:
        _write_durably(self.root / VERIFIED, json.dumps(verification.as_json()))

    def last_verification(self) -> Outcome | None:
        return _outcome(self.root / VERIFIED)

    def record_push(self, outcome: Outcome) -> None:
        """How the last copy off the machine (`vetify backup push`) went."""
        _write_durably(self.root / PUSHED, json.dumps(outcome.as_json()))

    def last_push(self) -> Outcome | None:
        return _outcome(self.root / PUSHED)

    # -- retention -------------------------------------------------------------------------
    def prune(self, window: dt.timedelta, now: dt.datetime) -> Pruned:
        """Keep what a restore to any time of the last ``window`` needs: every base backup
        finished within it and the newest one before it, and the WAL from the oldest kept
        backup's start on. Backups whose taking died (``.partial``) go too."""
        for partial in self.base.glob("*.partial"):
            shutil.rmtree(partial)
        gone, oldest = retained(self.backups(), window, now)
        for label in gone:
            (self.base / f"{label}.json").unlink()
            shutil.rmtree(self.base / label)
        if oldest is None:
            return Pruned([], 0)
        # By segment number, across timelines, as pg_archivecleanup does; history files stay.
        stale = [name for name in self.segments() if name[8:] < oldest[8:]]
        if stale:
            run("pg_archivecleanup", str(self.wal), oldest)
        return Pruned(gone, len(stale))


def retained(
    backups: list[BaseBackup], window: dt.timedelta, now: dt.datetime
) -> tuple[list[str], str | None]:
    """What a restore to any time of the last ``window`` does not need of ``backups``: the
    labels of those older than the newest one finished before it, and the first WAL segment
    still needed (the oldest kept backup's start; None: no backup, nothing to remove)."""
    backups = sorted(backups, key=lambda backup: backup.finished)
    if not backups:
        return [], None
    before = [backup for backup in backups if backup.finished < now - window]
    kept_from = before[-1] if before else backups[0]
    gone = [backup.label for backup in backups if backup.finished < kept_from.finished]
    return gone, kept_from.start_segment


def scalar(connection: psycopg.Connection[tuple[Any, ...]], query: Query) -> Any:
    """The one value ``query`` answers."""
    row = connection.execute(query).fetchone()
    if row is None:  # pragma: no cover - every query given answers one row
        raise BackupError(f"no answer to {query!r}")
    return row[0]


def _write_durably(path: Path, text: str) -> None:
    """``text`` in ``path`` whole or not at all, on disk when this returns."""
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as file:
        file.write(text + "\n")
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)


def _outcome(path: Path) -> Outcome | None:
    if not path.exists():
        return None
    fields = json.loads(path.read_text())
    return Outcome(dt.datetime.fromisoformat(fields["at"]), fields["ok"], fields["detail"])


def read_backup(path: Path) -> BaseBackup:
    fields = json.loads(path.read_text())
    for moment in ("started", "finished"):
        fields[moment] = dt.datetime.fromisoformat(fields[moment])
    return BaseBackup(**fields)


def run(binary: str, *args: str, user: int | None = None, group: int | None = None) -> str:
    """One of PostgreSQL's bundled programs, to its end; :class:`BackupError` with its
    output if it fails."""
    result = subprocess.run(  # noqa: S603 - fixed argv to a bundled binary  # nosec B603
        [str(bin_dir() / binary), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        user=user,
        group=group,
        check=False,
        timeout=6 * 3600,
    )
    if result.returncode != 0:
        raise BackupError(f"{binary} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def newest(backups: Sequence[BaseBackup], at_or_before: dt.datetime | None) -> BaseBackup:
    """The base backup a restore to ``at_or_before`` (None: the latest) starts from."""
    usable = [b for b in backups if at_or_before is None or b.finished <= at_or_before]
    if not usable:
        if not backups:
            raise BackupError("the repository holds no base backup: take one (vetify backup now)")
        raise BackupError(
            f"no base backup finished by {at_or_before:%Y-%m-%d %H:%M:%S %Z}: the oldest"
            f" finished at {backups[0].finished:%Y-%m-%d %H:%M:%S %Z}"
        )
    return usable[-1]
