"""Backups of the embedded database, restored for real (ADR 0039): a real cluster archiving
into a repository, base backups, point-in-time and latest restores, and the damage a restore
must refuse (a truncated base backup, a segment missing or corrupt) rather than half-restore."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from app import cli
from app.backup import commands
from app.backup import restore as restoring
from app.backup import service as backup
from app.backup.metrics import BackupFigures
from app.backup.repository import BackupError, Outcome, Repository, segment_number
from app.db.embedded import DATABASE, EmbeddedPostgres, free_port
from app.db.migrate import head_revisions
from app.kit.clock import utcnow
from app.observability import scrape
from app.observability.scrape import DatabaseFigures
from app.settings import Settings
from tests.harness.backups import History, copied, make_history, sql
from tests.harness.live import until
from tests.harness.scrapes import samples

SEGMENT = 1024 * 1024


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return make_history(tmp_path_factory.mktemp("backups"))


@pytest.fixture
def repository(history, tmp_path) -> Repository:
    """A copy of the history's repository, to damage."""
    return copied(history, tmp_path)


def _values(target: Path) -> list[int]:
    server = EmbeddedPostgres(target).start()
    try:
        return [int(str(row[0])) for row in sql(server, "SELECT value FROM t ORDER BY value")]
    finally:
        server.stop()


def test_a_restore_to_a_time_has_every_write_before_it_and_none_after(history, tmp_path):
    at = history.writes[3] + (history.writes[4] - history.writes[3]) / 2
    restored = restoring.restore(history.repository, tmp_path / "pitr", at, archive=None)
    assert restored.reason.startswith("before ")
    assert _values(tmp_path / "pitr") == [0, 1, 2, 3]


def test_a_restore_to_the_latest_has_every_archivedwrite(history, tmp_path):
    restored = restoring.restore(history.repository, tmp_path / "latest", None, archive=None)
    assert restored.reason == "no recovery target specified"
    assert _values(tmp_path / "latest") == [0, 1, 2, 3, 4, 5]
    assert not (tmp_path / "latest" / "recovery.signal").exists()


def test_a_repository_whose_path_holds_a_percent_sign_restores(history, tmp_path):
    odd = Repository(tmp_path / "at 100% full" / "repository")
    shutil.copytree(history.repository.root, odd.root)
    restoring.restore(odd, tmp_path / "latest", None, archive=None)
    assert _values(tmp_path / "latest") == [0, 1, 2, 3, 4, 5]


def test_a_restore_refuses_a_directory_holding_anything(history, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "PG_VERSION").write_text("18\n")
    with pytest.raises(BackupError, match="not empty"):
        restoring.restore(history.repository, tmp_path / "taken", None, archive=None)
    assert (tmp_path / "taken" / "PG_VERSION").exists()


def test_a_time_before_every_base_backup_is_refused_naming_the_oldest(history, tmp_path):
    with pytest.raises(BackupError, match=r"no base backup finished by .* the oldest finished"):
        restoring.restore(history.repository, tmp_path / "x", history.before_backup, archive=None)
    assert not (tmp_path / "x").exists()


def test_a_truncated_base_backup_is_refused_before_anything_is_restored(repository, tmp_path):
    (backup,) = repository.backups()
    tarball = repository.base / backup.label / "base.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(BackupError, match=f"base backup {backup.label} is damaged"):
        restoring.restore(repository, tmp_path / "x", None, archive=None)
    assert not (tmp_path / "x").exists()
    with pytest.raises(BackupError, match="is damaged"):
        restoring.verify(repository, "postgres")


def _after_backup(repository: Repository) -> list[str]:
    (backup,) = repository.backups()
    start = segment_number(backup.start_segment, SEGMENT)
    return [name for name in repository.segments() if segment_number(name, SEGMENT) > start + 1]


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_gap_in_the_archive_is_refused_by_a_restore_to_the_latest(repository, tmp_path, damage):
    segment = repository.wal / _after_backup(repository)[1]
    if damage == "missing":
        segment.unlink()
    else:
        data = bytearray(segment.read_bytes())
        data[100:4000] = bytes(3900)  # the first records' headers and contents, zeroed
        segment.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="missing, or that one is corrupt"):
        restoring.restore(repository, tmp_path / "latest", None, archive=None)
    assert not (tmp_path / "latest").exists()
    with pytest.raises(BackupError, match="missing, or that one is corrupt"):
        restoring.verify(repository, "postgres")


def test_a_refused_restore_that_archives_leaves_the_repository_as_it_was(repository, tmp_path):
    (repository.wal / _after_backup(repository)[1]).unlink()
    before = sorted(path.name for path in repository.wal.iterdir())
    with pytest.raises(BackupError, match="missing, or that one is corrupt"):
        restoring.restore(
            repository, tmp_path / "latest", None, archive=repository.server_options(60)
        )
    # Its new timeline (history, first segment) is gone again: the next restore does not
    # follow it to where this one stopped.
    assert sorted(path.name for path in repository.wal.iterdir()) == before
    assert not (tmp_path / "latest").exists()


def test_what_a_refused_restore_archived_of_its_timeline_is_forgotten(repository):
    kept = sorted(path.name for path in repository.wal.iterdir())
    newest = repository.newest_timeline()
    assert newest == 1
    left = [f"{newest + 1:08X}.history", f"{newest + 1:08X}{kept[-1][8:]}"]
    for name in left:
        (repository.wal / name).write_bytes(b"what a refused restore archived")
    assert repository.newest_timeline() == newest + 1
    repository.forget_timelines_after(newest)
    assert sorted(path.name for path in repository.wal.iterdir()) == kept


def test_a_restore_to_a_time_past_a_gap_is_refused(history, repository, tmp_path):
    (repository.wal / _after_backup(repository)[1]).unlink()
    with pytest.raises(BackupError, match=r"recovery failed: .*recovery target"):
        restoring.restore(repository, tmp_path / "x", history.writes[5], archive=None)
    assert not (tmp_path / "x").exists()


def test_verify_restores_the_latest_and_counts_its_rows(history):
    verified = restoring.verify(history.repository, "postgres")
    assert verified.rows == {"public.alembic_version": len(head_revisions()), "public.t": 6}
    assert verified.schema == ",".join(sorted(head_revisions()))


def test_verify_refuses_a_schema_that_is_not_this_versions(tmp_path):
    repository = Repository(tmp_path / "repository")
    repository.wal.mkdir(parents=True)
    server = EmbeddedPostgres(tmp_path / "pgdata", options=repository.server_options(60))
    server.owns(repository.wal)
    server.start()
    try:
        sql(server, "CREATE TABLE alembic_version (version_num text)")
        sql(server, "INSERT INTO alembic_version VALUES ('0001')")
        repository.take(server.url(driver=""))
    finally:
        server.destroy()
    with pytest.raises(BackupError, match=r"schema is at \['0001'\], not at this version's"):
        restoring.verify(repository, "postgres")


def test_retention_keeps_what_a_restore_within_the_window_needs(repository):
    (first,) = repository.backups()
    a_day = dt.timedelta(days=1)
    # A second, later backup: the first's files under a new label, finished a day later.
    later = repository.backups()[0].finished + a_day
    label = later.strftime("%Y%m%dT%H%M%SZ")
    shutil.copytree(repository.base / first.label, repository.base / label)
    described = json.loads((repository.base / f"{first.label}.json").read_text())
    newest_segment = repository.segments()[-1]
    start = f"{int(newest_segment[8:16], 16):X}/{int(newest_segment[16:], 16) * SEGMENT:X}"
    described.update(label=label, finished=later.isoformat(), start_lsn=start)
    (repository.base / f"{label}.json").write_text(json.dumps(described))
    (repository.base / "20200101T000000Z.partial").mkdir()  # a taking that died
    segments = repository.segments()
    needed = [name for name in segments if name[8:] >= first.start_segment[8:]]
    assert 1 < len(needed) < len(segments)

    # Both within the window: both stay, and the WAL from the older's start.
    within = repository.prune(dt.timedelta(days=30), later + dt.timedelta(hours=1))
    assert within.backups == []
    assert repository.segments() == needed
    assert within.segments == len(segments) - len(needed)
    assert [b.label for b in repository.backups()] == [first.label, label]
    assert not (repository.base / "20200101T000000Z.partial").exists()

    # Both older than the window: the newest of them stays, with the WAL from its start.
    past = repository.prune(dt.timedelta(days=30), later + dt.timedelta(days=31))
    assert past.backups == [first.label]
    assert [b.label for b in repository.backups()] == [label]
    assert not (repository.base / first.label).exists()
    assert repository.segments() == [newest_segment]
    assert past.segments == len(needed) - 1


def test_vetify_backup_now_list_verify_and_restore(tmp_path, monkeypatch, capsys):
    data = tmp_path / "state"
    monkeypatch.setenv("VETIFY_DATA_DIR", str(data))
    cli.main(["backup", "list"])
    assert "(no base backup: vetify backup now)" in capsys.readouterr().out
    cli.main(["migrate"])  # the embedded database made: its first base backup taken
    assert "a base backup on the database's timeline" in capsys.readouterr().out
    cli.main(["backup", "list"])
    assert len(capsys.readouterr().out.splitlines()) == 3  # heading, the backup, the archive
    cli.main(["migrate"])  # a start with a base backup on its timeline takes none
    assert "base backup" not in capsys.readouterr().out
    cli.main(["backup", "now"])  # starts the embedded database, and stops it
    assert "removed (older than the retention window): 0 base backups" in capsys.readouterr().out
    assert not EmbeddedPostgres(data / "pgdata").is_running()
    cli.main(["backup", "list", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["backups"]) == 2
    assert listed["wal_segments"] >= 2
    cli.main(["backup", "verify"])
    assert ": OK" in capsys.readouterr().out
    cli.main(["backup", "verify", "--json"])
    verified = json.loads(capsys.readouterr().out)
    assert verified["schema"] == ",".join(sorted(head_revisions()))
    assert verified["rows"]["public.clinics"] == 0
    # The embedded database's scrape: its backups' figures beside the rest.
    scraped = {
        name: number
        for (name, _), number in samples(
            generate_latest(scrape.registry(_served(Settings(data_dir=data)))).decode()
        ).items()
        if name.startswith("vetify_backup_")
    }
    assert scraped["vetify_backup_last_verify_success"] == 1
    finished = dt.datetime.fromisoformat(listed["backups"][-1]["finished"])
    assert scraped["vetify_backup_last_success_timestamp_seconds"] == finished.timestamp()
    assert set(scraped) == {
        "vetify_backup_oldest_success_timestamp_seconds",
        "vetify_backup_last_success_timestamp_seconds",
        "vetify_backup_wal_last_archived_timestamp_seconds",
        "vetify_backup_last_verify_timestamp_seconds",
        "vetify_backup_last_verify_success",
    }

    repository = Repository(data / "backups")
    with pytest.raises(SystemExit, match="pgdata is not empty: restore into a new directory"):
        cli.main(["backup", "restore", "--to", "latest"])
    # A copy beside the data directory: nothing of it goes into the repository.
    archived = sorted(repository.wal.iterdir())
    cli.main(["backup", "restore", "--to", "latest", "--target", str(tmp_path / "copy")])
    printed = capsys.readouterr().out
    assert f"A copy, not archived into {repository.root}" in printed
    assert (tmp_path / "copy" / "pgdata" / "PG_VERSION").exists()
    assert sorted(repository.wal.iterdir()) == archived

    # In place, as after the cluster's loss: its new timeline archived, and based at next start.
    (data / "pgdata").rename(data / "pgdata.damaged")
    cli.main(["backup", "restore", "--to", "latest"])
    assert "Start it with: vetify serve" in capsys.readouterr().out
    assert repository.newest_timeline() == 2
    assert (repository.wal / "00000002.history").exists()
    cli.main(["migrate"])
    assert "a base backup on the database's timeline" in capsys.readouterr().out
    assert repository.backups()[-1].timeline == 2


def test_a_stop_unwinds_a_backup_command_and_removes_its_cluster(history, tmp_path, monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path))
    try:
        cli.main(["backup", "list"])
        stop = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert callable(stop)
    scratch = tmp_path / "scratch"
    # SIGTERM in the middle of a verification: its scratch cluster (every clinic's rows) goes.
    with (  # noqa: PT012 - the signal arrives inside the restored cluster's block
        pytest.raises(SystemExit, match="stopped by signal 15"),
        restoring._recovered(history.repository, scratch, None, None) as (server, _),
    ):
        assert server.is_running()
        stop(signal.SIGTERM, None)
    assert not server.is_running()
    assert not scratch.exists()


def test_a_backup_refuses_a_data_directory_held_by_a_command_without_its_server(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path))
    with cli.claim(tmp_path, "vetify migrate (a test)"), pytest.raises(SystemExit) as refused:
        cli.main(["backup", "now"])
    assert "is in use by vetify migrate (a test)" in str(refused.value)


def test_a_server_about_to_serve_takes_its_base_backup_in_a_thread(tmp_path, caplog):
    settings = Settings(data_dir=tmp_path)
    server = backup.embedded(settings).start()
    try:
        thread = backup.ensure_base(settings, server, wait=False)
        assert thread is not None
        thread.join(60)
        assert len(backup.repository(settings).backups()) == 1
        assert backup.ensure_base(settings, server, wait=False) is None  # one on its timeline
    finally:
        server.stop()
    backup._base(settings, server)  # the server gone: logged for the operator, not raised
    assert "the base backup of the database's timeline failed" in caplog.text


def _served(settings: Settings) -> Settings:
    """As `vetify serve` has them once its embedded database runs: with its URLs."""
    url = SecretStr(f"postgresql+asyncpg://vetify_app@127.0.0.1:{free_port()}/vetify")
    return settings.model_copy(update={"database_url": url, "database_owner_url": url})


def test_an_empty_repository_has_no_figures_and_nothing_to_prune(tmp_path):
    repository = Repository(tmp_path / "repository")
    assert _figures(BackupFigures(repository)) == {}
    assert repository.prune(dt.timedelta(days=30), utcnow()).backups == []


def test_an_external_databases_scrape_has_no_backup_figures(tmp_path):
    families = {
        family.name for family in scrape.registry(_served(Settings(data_dir=tmp_path))).collect()
    }
    assert "vetify_metrics_database_up" in families
    assert not any(name.startswith("vetify_backup_") for name in families)


def _figures(collector: BackupFigures | DatabaseFigures) -> dict[str, float]:
    return {
        sample.name: sample.value for family in collector.collect() for sample in family.samples
    }


def test_a_failed_verification_is_recorded_for_the_alert(repository):
    (backup,) = repository.backups()
    (repository.base / backup.label / "backup_manifest").unlink()
    with pytest.raises(SystemExit, match="is damaged"):
        commands.run(
            Settings(data_dir=repository.root.parent, backup_dir=repository.root),
            argparse.Namespace(backup_command="verify", json=False, offsite=False),
        )
    assert _figures(BackupFigures(repository))["vetify_backup_last_verify_success"] == 0
    verification = repository.last_verification()
    assert verification is not None
    assert "is damaged" in verification.detail


def test_a_repository_state_it_cannot_read_is_left_out_of_the_scrape(repository, caplog):
    repository.record_verification(Outcome(utcnow(), True, "ok"))
    (repository.root / "verified.json").write_text("{not json")
    scraped = _figures(BackupFigures(repository))
    assert "vetify_backup_last_verify_success" not in scraped
    assert "vetify_backup_last_success_timestamp_seconds" not in scraped
    assert "the backup repository's figures are missing" in caplog.text


def test_one_writer_at_a_time_holds_the_repository(tmp_path):
    repository = Repository(tmp_path / "repository")
    entered = threading.Event()

    def second() -> None:
        with repository.locked():
            entered.set()

    with repository.locked():
        waiting = threading.Thread(target=second)
        waiting.start()
        assert not entered.wait(0.3)
    assert entered.wait(10)
    waiting.join()


def test_failing_wal_archiving_is_scraped(tmp_path, monkeypatch):
    data = tmp_path / "state"
    monkeypatch.setenv("VETIFY_DATA_DIR", str(data))
    cli.main(["migrate"])
    settings = Settings(data_dir=data)
    server = backup.embedded(settings).start()
    figures = DatabaseFigures(server.url(database=DATABASE, driver=""))
    wal = backup.repository(settings).wal
    try:
        assert _figures(figures)["vetify_wal_archive_failing"] == 0
        wal.chmod(0)  # the archive's disk refuses the server
        sql(server, "SELECT pg_switch_wal() FROM (SELECT txid_current()) AS written")
        until("archiving failed", lambda: _figures(figures)["vetify_wal_archive_failing"] == 1)
        wal.chmod(0o700)
        # Woken by a switch (after failures it otherwise retries once a minute).
        sql(server, "SELECT pg_switch_wal() FROM (SELECT txid_current()) AS written")
        until("archiving again", lambda: _figures(figures)["vetify_wal_archive_failing"] == 0)
    finally:
        wal.chmod(0o700)
        server.stop()


def test_vetify_backup_refuses_a_time_without_offset_and_a_restore_without_backups(
    monkeypatch, tmp_path
):
    for moment in ("2026-12-07T09:30:00", "yesterday"):
        with pytest.raises(SystemExit) as refused:
            cli.main(["backup", "restore", "--to", moment])
        assert refused.value.code == 2  # argparse: the usage and the reason
    with pytest.raises(SystemExit, match="the repository holds no base backup"):
        cli.main(["backup", "restore", "--to", "2026-12-07T09:30:00+01:00"])


def test_a_base_backup_is_taken_while_vetify_serves(tmp_path, monkeypatch, capsys):
    data = tmp_path / "state"
    monkeypatch.setenv("VETIFY_DATA_DIR", str(data))
    server = backup.embedded(Settings()).start()  # as `vetify serve` holds it
    try:
        with cli.claim(data, "vetify serve (a test)"):
            cli.main(["backup", "now"])
        assert server.is_running()
    finally:
        server.stop()
    assert "base backup " in capsys.readouterr().out
    assert utcnow() - Repository(data / "backups").backups()[0].finished < dt.timedelta(minutes=5)


def test_vetify_backup_of_an_external_database_archiving_as_documented(
    tmp_path, monkeypatch, capsys
):
    """A PostgreSQL of the operator's, its postgresql.conf archiving into the repository as
    docs/runbook.md says, provisioned by `vetify db provision` as a superuser (which lets the
    backup role take base backups): now, list, verify and a restore into a new directory."""
    repository = Repository(tmp_path / "backups")
    repository.wal.mkdir(parents=True)
    external = EmbeddedPostgres(
        tmp_path / "external",
        port=free_port(),
        options=repository.server_options(10),
        wal_segment_mib=1,
    )
    external.owns(repository.wal)
    external.start()
    try:
        cli.main(["db", "provision", "--admin-url", external.url()])
        printed = capsys.readouterr().out
        urls = dict(re.findall(r"^(VETIFY_DATABASE(?:_OWNER)?_URL)=(\S+)$", printed, re.M))
        [backup_url] = re.findall(r"^# backup role \(pg_dump\): (\S+)$", printed, re.M)
        for name, url in {**urls, "VETIFY_DATABASE_BACKUP_URL": backup_url}.items():
            monkeypatch.setenv(name, url)
        monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("VETIFY_BACKUP_DIR", str(repository.root))
        cli.main(["migrate"])
        cli.main(["backup", "now"])
        assert "base backup" in capsys.readouterr().out
        sql(external, "SELECT pg_switch_wal()")
        cli.main(["backup", "list", "--json"])
        assert len(json.loads(capsys.readouterr().out)["backups"]) == 1
        cli.main(["backup", "verify", "--json"])
        verified = json.loads(capsys.readouterr().out)
        assert verified["schema"] == ",".join(sorted(head_revisions()))
        assert verified["rows"]["public.alembic_version"] == len(head_revisions())

        with pytest.raises(SystemExit, match="is not Vetify's to replace: restore into a new"):
            cli.main(["backup", "restore", "--to", "latest"])
        cli.main(["backup", "restore", "--to", "latest", "--target", str(tmp_path / "new")])
        assert "To make it the database: stop its server" in capsys.readouterr().out
        assert (tmp_path / "new" / "pgdata" / "PG_VERSION").read_text().strip() == str(
            external_major(external)
        )

        # What the backup refuses: a repository the server does not archive into, a role
        # that may not take a base backup.
        monkeypatch.setenv("VETIFY_BACKUP_DIR", str(tmp_path / "elsewhere"))
        with pytest.raises(SystemExit, match=r"does not archive its WAL into .*elsewhere/wal"):
            cli.main(["backup", "now"])
        monkeypatch.setenv("VETIFY_BACKUP_DIR", str(repository.root))
        with monkeypatch.context() as tools:  # as if Vetify bundled another major version
            tools.setattr(backup, "major", lambda: 17)
            with pytest.raises(SystemExit, match=r"runs PostgreSQL 18; .* PostgreSQL 17's"):
                cli.main(["backup", "now"])
        sql(external, "ALTER ROLE vetify_backup NOREPLICATION")
        with pytest.raises(SystemExit, match="the backup role may not take a base backup"):
            cli.main(["backup", "now"])
        monkeypatch.delenv("VETIFY_DATABASE_BACKUP_URL")
        with pytest.raises(SystemExit, match="set VETIFY_DATABASE_BACKUP_URL"):
            cli.main(["backup", "now"])
    finally:
        external.destroy()


def external_major(server: EmbeddedPostgres) -> int:
    ((version,),) = sql(server, "SELECT current_setting('server_version_num')::int / 10000")
    return int(str(version))
