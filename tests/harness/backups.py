"""A backup repository with a history, made by a real cluster (tests of app/backup): written
to, backed up, written to again, every write in a WAL segment of its own."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app.backup.repository import Repository
from app.db.embedded import EmbeddedPostgres
from app.db.migrate import head_revisions


def sql(server: EmbeddedPostgres, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(server.url(driver=""), autocommit=True) as connection:
        cursor = connection.execute(query, params or None)
        return cursor.fetchall() if cursor.description else []


def write(server: EmbeddedPostgres, value: int) -> dt.datetime:
    """One acknowledged write, in a WAL segment of its own once archived; when it committed."""
    (at,) = sql(server, "INSERT INTO t VALUES (%s) RETURNING clock_timestamp()", value)[0]
    sql(server, "SELECT pg_switch_wal()")
    assert isinstance(at, dt.datetime)
    return at


def archived(server: EmbeddedPostgres) -> None:
    """Wait until every completed segment is in the archive."""
    deadline = time.monotonic() + 30
    while True:
        ((ready,),) = sql(
            server,
            "SELECT last_archived_wal = pg_walfile_name(pg_current_wal_lsn() - 1)"
            " FROM pg_stat_archiver",
        )
        if ready:
            return
        assert time.monotonic() < deadline, "the archiver did not catch up"
        time.sleep(0.05)


@dataclass(frozen=True)
class History:
    """A repository made by a cluster that was written to, backed up, and written to again."""

    repository: Repository
    before_backup: dt.datetime
    writes: dict[int, dt.datetime]
    """Each write after the base backup (its value) and when it committed."""


def make_history(root: Path) -> History:
    """A repository under ``root``: table ``t`` holding 0 (and the migrations' head in
    ``alembic_version``), a base backup, then 1 to 5, each archived."""
    repository = Repository(root / "repository")
    repository.wal.mkdir(parents=True)
    server = EmbeddedPostgres(
        root / "pgdata", options=repository.server_options(60), wal_segment_mib=1
    )
    server.owns(repository.wal)
    server.start()
    try:
        sql(server, "CREATE TABLE t (value int PRIMARY KEY)")
        sql(server, "CREATE TABLE alembic_version (version_num text)")
        for revision in head_revisions():
            sql(server, "INSERT INTO alembic_version VALUES (%s)", revision)
        before = write(server, 0)
        repository.take(server.url(driver=""))
        writes = {value: write(server, value) for value in range(1, 6)}
        archived(server)
    finally:
        server.destroy()
    return History(repository, before, writes)


def copied(history: History, into: Path) -> Repository:
    """A copy of the history's repository under ``into``, for a test to change."""
    copy = Repository(into / "repository")
    shutil.copytree(history.repository.root, copy.root)
    return copy
