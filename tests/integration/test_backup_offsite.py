"""The backup repository's copy off the machine (ADR 0042): pushed to a real S3 API (moto's
server) through rclone, encrypted before it leaves, pulled back and restored; a wrong key is
refused before anything is copied, a file altered after its copy is not uploaded over it, and
the retention window is applied to the copy itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import certifi
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from app import cli
from app.backup import restore as restoring
from app.backup import service as backup
from app.backup.metrics import BackupFigures
from app.backup.offsite import MARKER, Offsite
from app.backup.repository import BackupError, Repository
from app.kit.clock import utcnow
from app.settings import Settings
from tests.harness.backups import History, copied, make_history
from tests.harness.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from tests.harness.scrapes import samples

KEY = "correct horse battery staple, twice over"  # pragma: allowlist secret


def _settings(s3: S3Server, bucket: str, root: Path, key: str = KEY) -> Settings:
    return Settings(
        backup_dir=root,
        backup_s3_bucket=bucket,
        backup_s3_endpoint_url=s3.endpoint_url,
        backup_s3_region=REGION,
        backup_s3_access_key_id=SecretStr(ACCESS_KEY),
        backup_s3_secret_access_key=SecretStr(SECRET_KEY),
        backup_encryption_key=SecretStr(key),
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> History:
    return make_history(tmp_path_factory.mktemp("backups"))


@pytest.fixture
def local(history, tmp_path) -> Repository:
    return copied(history, tmp_path)


def _objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def test_the_copy_is_encrypted_and_restores_and_a_wrong_key_is_refused(
    s3, local, tmp_path, monkeypatch
):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    bucket = s3.new_bucket("offsite-restores")
    settings = _settings(s3, bucket, local.root)
    backup.push(settings)
    backup.push(settings)  # nothing new: nothing changes, nothing fails

    stored = _objects(s3, bucket)
    segment = local.segments()[-1]
    assert f"vetify/wal/{segment}.bin" in stored
    assert f"vetify/{MARKER}.bin" in stored
    plain = (local.wal / segment).read_bytes()
    assert stored[f"vetify/wal/{segment}.bin"][64:1024] not in plain  # not the segment's bytes
    assert all(plain[4096:4160] not in body for body in stored.values())
    head = s3.client().head_object(Bucket=bucket, Key=f"vetify/wal/{segment}.bin")
    assert head["ServerSideEncryption"] == "AES256"  # and the store's own, at rest
    assert local.last_push().ok

    pulled = Repository(tmp_path / "pulled")
    Offsite(settings).pull(pulled)
    # The segments before the backup's start: removed from both by the retention window.
    start = local.backups()[0].start_segment
    assert min(local.segments()) == start
    assert sorted(path.name for path in pulled.wal.iterdir()) == sorted(
        path.name for path in local.wal.iterdir()
    )
    assert {oct(path.stat().st_mode & 0o777) for path in pulled.wal.iterdir()} == {"0o600"}
    verified = restoring.verify(pulled, "postgres")
    assert verified.rows["public.t"] == 6

    wrong = _settings(s3, bucket, tmp_path / "other", key="not the key, though just as long as it")
    with pytest.raises(BackupError, match="VETIFY_BACKUP_ENCRYPTION_KEY does not open the copy"):
        Offsite(wrong).pull(Repository(tmp_path / "not-pulled"))
    assert not (tmp_path / "not-pulled").exists()
    with pytest.raises(BackupError, match="does not open the copy"):
        Offsite(wrong).push(local)  # nor does it mix a second key's files into the copy
    with pytest.raises(BackupError, match="is not empty: pull into a new directory"):
        Offsite(settings).pull(pulled)
    empty = _settings(s3, s3.new_bucket("offsite-empty"), tmp_path / "none")
    with pytest.raises(BackupError, match="there is no Vetify backup repository in s3://"):
        Offsite(empty).pull(Repository(tmp_path / "from-nothing"))
    # A repository with nothing in it yet (a first start before its base backup): its copy is
    # begun, and nothing is removed from it.
    assert backup.push(empty).backups == []
    Offsite(empty).check(create=False)

    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    with pytest.raises(BackupError, match="needs rclone: apt-get install rclone"):
        Offsite(settings)
    with pytest.raises(BackupError, match="set VETIFY_BACKUP_S3_BUCKET and"):
        Offsite(Settings(backup_dir=local.root))


def test_a_file_altered_after_its_copy_is_not_uploaded_and_the_failure_is_scraped(s3, local):
    bucket = s3.new_bucket("offsite-immutable")
    settings = _settings(s3, bucket, local.root)
    backup.push(settings)
    before = _objects(s3, bucket)
    altered = local.wal / local.segments()[-1]
    altered.write_bytes(b"ransomware was here" + altered.read_bytes()[19:])

    with pytest.raises(BackupError, match="rclone copy"):
        backup.push(settings)

    assert _objects(s3, bucket) == before
    assert not local.last_push().ok
    figures = samples(generate_latest(_registry(local)).decode())
    assert figures[("vetify_backup_offsite_last_push_success", frozenset())] == 0
    assert figures[("vetify_backup_offsite_last_push_timestamp_seconds", frozenset())] > 0


def _registry(repository: Repository) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(BackupFigures(repository))
    return registry


def test_retention_applies_to_the_copy_itself(s3, local):
    bucket = s3.new_bucket("offsite-retention")
    settings = _settings(s3, bucket, local.root)
    [first] = local.backups()
    # A second base backup, a day later, starting in the archive's last segment.
    later = dataclasses.replace(
        first,
        label="29991231T000000.000Z",
        started=utcnow(),
        finished=utcnow(),
        start_lsn=f"0/{int(local.segments()[-1][16:], 16) * first.segment_bytes:X}",
    )
    shutil.copytree(local.base / first.label, local.base / later.label)
    (local.base / f"{later.label}.json").write_text(json.dumps(later.as_json()))
    backup.push(settings)
    segments = len(local.segments())

    pruned = Offsite(settings).prune(dt.timedelta(0), utcnow() + dt.timedelta(days=1))

    assert pruned.backups == [first.label]
    assert pruned.segments == segments - 1
    left = _objects(s3, bucket)
    assert not any(first.label in key for key in left)
    assert f"vetify/base/{later.label}.json.bin" in left
    assert [key for key in left if "/wal/" in key and len(key.split("/")[-1]) == 28] == [
        f"vetify/wal/{later.start_segment}.bin"
    ]
    assert len(local.backups()) == 2  # the copy's retention, not the repository's


def test_vetify_backup_now_pushes_and_verify_offsite_and_pull_restore_from_the_copy(
    s3, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("AWS_CA_BUNDLE", certifi.where())  # handed to rclone as --ca-cert
    bucket = s3.new_bucket("offsite-commands")
    data = tmp_path / "state"
    for name, value in {
        "VETIFY_DATA_DIR": str(data),
        "VETIFY_BACKUP_S3_BUCKET": bucket,
        "VETIFY_BACKUP_S3_ENDPOINT_URL": s3.endpoint_url,
        "VETIFY_BACKUP_S3_REGION": REGION,
        "VETIFY_BACKUP_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "VETIFY_BACKUP_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "VETIFY_BACKUP_ENCRYPTION_KEY": KEY,
    }.items():
        monkeypatch.setenv(name, value)
    cli.main(["migrate"])  # the first base backup: local only
    cli.main(["backup", "now"])  # a second, and the repository copied off the machine
    assert "removed (older than the retention window)" in capsys.readouterr().out
    cli.main(["backup", "push"])
    assert f"copied to s3://{bucket}/vetify" in capsys.readouterr().out
    cli.main(["backup", "verify", "--offsite", "--json"])
    assert json.loads(capsys.readouterr().out)["rows"]["public.clinics"] == 0

    # The machine lost: a new one pulls the copy, and restores from it.
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path / "new"))
    cli.main(["backup", "pull"])
    assert "pulled into" in capsys.readouterr().out
    cli.main(["backup", "restore", "--to", "latest"])
    assert "Start it with: vetify serve" in capsys.readouterr().out
    monkeypatch.setenv("VETIFY_BACKUP_ENCRYPTION_KEY", "x" * 40)
    with pytest.raises(SystemExit, match="does not open the copy"):
        cli.main(["backup", "pull", "--into", str(tmp_path / "elsewhere")])
    with pytest.raises(SystemExit, match=r"taken, but its copy off the machine failed: .* open"):
        cli.main(["backup", "now"])
    monkeypatch.delenv("VETIFY_BACKUP_ENCRYPTION_KEY")
    with pytest.raises(SystemExit, match="VETIFY_BACKUP_S3_BUCKET needs VETIFY_BACKUP_ENCRYPTION"):
        cli.main(["backup", "push"])
