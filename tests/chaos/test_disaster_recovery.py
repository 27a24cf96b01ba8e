"""The disaster-recovery drill (issue 22, ADR 0039), as an operator would live it: `vetify serve`
on its embedded database takes writes through the API without pause; a base backup is taken
while it serves; at a time T the drill notes what was acknowledged; the server is killed and its
cluster deleted; `vetify backup restore` brings back the latest state and the state at T, and
`vetify serve` runs on each. Then the machine itself is lost: a new one pulls the repository's
encrypted copy from object storage (moto's S3, as `vetify backup push` left it from cron) and
restores the latest from it. Attachments live in object storage too (another bucket), and each
restored database's files answer.

What must hold: at T, every write acknowledged before T is there and none sent after it; at the
latest, only the writes of the last archive timeout may be lost (the RPO, measured); the tenancy
wall stands (the service's role sees no clinic's rows without a clinic, and a clinic's token
reaches none of another's); the time from the restore command to a ready service (the RTO) is
measured, and for the lost machine the writes lost since the last push. The numbers go to the
chaos report. The full (nightly) length adds ballast first, so
the restore moves a realistic amount of data.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from app.backup.repository import Repository
from app.db.embedded import DATABASE, EmbeddedPostgres, free_port
from app.kit.clock import utcnow
from fixtures import files
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.chaos.conftest import Outcome, smoke
from tests.harness.api import SIGNUP_PASSWORD, signup_sync
from tests.harness.live import Vetify, api_token, run_vetify, vetify_env
from tests.harness.s3 import ACCESS_KEY, REGION, SECRET_KEY, S3Server, s3_server

ARCHIVE_TIMEOUT = 10 if smoke() else 60
"""``VETIFY_BACKUP_ARCHIVE_TIMEOUT_SECONDS``: the nightly run keeps the default."""
BALLAST_MB = 0 if smoke() else 1024
"""Rows added before the base backup: the nightly run restores a gigabyte."""
WRITING = 3.0 if smoke() else 30.0
"""Seconds of writes before the backup, between it and T, and after T (plus the archive
timeout)."""
RATE = 5.0
"""Writes a second: a busy clinic's, well within its rate limit."""


@dataclass
class Writes:
    """A writer that creates a customer after another through the API, and what it saw."""

    url: str
    token: str
    sent: dict[str, dt.datetime] = field(default_factory=dict)
    """Each write's last name, and when it was sent."""
    acknowledged: dict[str, dt.datetime] = field(default_factory=dict)
    """Each write answered 201, and when the answer came."""
    ids: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: dict[int, int] = field(default_factory=dict)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            while not self.stop.is_set():
                name = f"Drill {len(self.sent):06d}"
                self.sent[name] = utcnow()
                try:
                    answer = http.post(
                        "/api/v1/customers", json={"first_name": "Dee", "last_name": name}
                    )
                except httpx.TransportError:
                    return  # the server is gone: the disaster
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 201:
                    self.acknowledged[name] = utcnow()
                    self.ids[name] = answer.json()["id"]
                self.stop.wait(1 / RATE)


KEY = "the drill's backup key, 32 characters or more"  # pragma: allowlist secret


def _stores(s3: S3Server) -> dict[str, str]:
    """Attachments in one bucket, the backups' encrypted copy in another."""
    return {
        "VETIFY_STORAGE_BACKEND": "s3",
        "VETIFY_S3_BUCKET": s3.new_bucket(f"files-{uuid.uuid4().hex[:8]}"),
        "VETIFY_S3_ENDPOINT_URL": s3.endpoint_url,
        "VETIFY_S3_REGION": REGION,
        "VETIFY_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "VETIFY_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "VETIFY_BACKUP_S3_BUCKET": s3.new_bucket(f"backups-{uuid.uuid4().hex[:8]}"),
        "VETIFY_BACKUP_S3_ENDPOINT_URL": s3.endpoint_url,
        "VETIFY_BACKUP_S3_REGION": REGION,
        "VETIFY_BACKUP_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "VETIFY_BACKUP_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "VETIFY_BACKUP_ENCRYPTION_KEY": KEY,
    }


def _serve(data_dir: Path, backups: Path, port: int, stores: dict[str, str], *args: str) -> Vetify:
    return Vetify(
        ["serve", "--port", str(port), *args],
        vetify_env(
            VETIFY_DATA_DIR=str(data_dir),
            VETIFY_BACKUP_DIR=str(backups),
            VETIFY_BACKUP_ARCHIVE_TIMEOUT_SECONDS=str(ARCHIVE_TIMEOUT),
            **stores,
        ),
    ).start()


def _vetify(data_dir: Path, backups: Path, stores: dict[str, str], *args: str) -> None:
    """A `vetify` command on the drill's database, which must succeed."""
    done = run_vetify(
        *args, VETIFY_DATA_DIR=str(data_dir), VETIFY_BACKUP_DIR=str(backups), timeout=3600,
        **stores,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _attach(url: str, token: str) -> tuple[str, bytes]:
    """A file attached to one of the clinic's records: its id and its bytes."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        records = http.get("/api/v1/medical-records", params={"limit": 1})
        assert records.status_code == 200, records.text
        record = records.json()["items"][0]["id"]
        content = files.png_with_comment(f"drill {uuid.uuid4()}")
        made = http.post(
            f"/api/v1/medical-records/{record}/attachments",
            files={"file": ("x-ray.png", content, "image/png")},
        )
        assert made.status_code == 201, made.text
        return made.json()["id"], content


def _names(url: str, token: str) -> set[str]:
    """Every customer of the token's clinic, by last name, through the API."""
    names: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        cursor: str | None = None
        while True:
            page = http.get(
                "/api/v1/customers", params={"limit": 100, **({"cursor": cursor} if cursor else {})}
            )
            assert page.status_code == 200, page.text
            body = page.json()
            names |= {item["last_name"] for item in body["items"]}
            cursor = body.get("next_cursor")
            if not cursor:
                return names


def _ballast(data_dir: Path, megabytes: int) -> None:
    """``megabytes`` of rows in a table of their own, for the restore to carry."""
    server = EmbeddedPostgres(data_dir / "pgdata")
    with psycopg.connect(server.url(database=DATABASE, driver=""), autocommit=True) as db:
        db.execute("CREATE TABLE drill_ballast (id bigint, filler text)")
        # Random text (compressed about in half, as clinical data is), not a repeated one.
        db.execute(
            "INSERT INTO drill_ballast SELECT n, filler FROM generate_series(1, %s) AS n,"
            " LATERAL (SELECT string_agg(md5(random()::text), '') AS filler"
            " FROM generate_series(1, 30 + 0 * n)) AS random_text",
            (megabytes * 1024 * 1024 // 1000,),
        )


def _wall(server: EmbeddedPostgres) -> dict[str, int]:
    """What the service's role sees with no clinic set (row-level security: nothing), and
    whether it can read past the wall."""
    url = server.url(user="vetify_app", database=DATABASE, driver="")
    with psycopg.connect(url) as db:
        (customers,) = db.execute("SELECT count(*) FROM customers").fetchone() or (None,)
        (bypass,) = db.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or (None,)
    return {"customers_seen_without_a_clinic": int(str(customers)), "bypasses": int(bool(bypass))}


def test_a_destroyed_database_is_restored_to_a_time_and_to_the_latest(
    tmp_path: Path, chaos: Outcome
) -> None:
    with s3_server() as s3:
        _drill(tmp_path, chaos, _stores(s3))


def _drill(tmp_path: Path, chaos: Outcome, stores: dict[str, str]) -> None:
    data, backups = tmp_path / "state", tmp_path / "backups"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = _serve(data, backups, port, stores, "--demo")
    try:
        serve.wait_until_ready(url, within=120)
        other = f"other-{uuid.uuid4().hex[:8]}@example.com"
        with httpx.Client(base_url=url, timeout=30) as http:
            assert signup_sync(http, email=other).status_code == 201
        token = api_token(url, "drill", DEMO_EMAIL, DEMO_PASSWORD)
        other_token = api_token(url, "drill", other, SIGNUP_PASSWORD)
        attachment, content = _attach(url, token)
        if BALLAST_MB:
            _ballast(data, BALLAST_MB)

        writes = Writes(url, token)
        writer = threading.Thread(target=writes.run, daemon=True)
        writer.start()
        time.sleep(WRITING)
        _vetify(data, backups, stores, "backup", "now")  # and its copy off the machine
        base = Repository(backups).backups()[-1]
        time.sleep(WRITING)
        at = utcnow()
        # Past the archive timeout: every write before T is archived by the disaster, and
        # copied off the machine by the last push before it (cron's, every few minutes).
        time.sleep(ARCHIVE_TIMEOUT + WRITING)
        pushed = utcnow()  # what it copies is what was archived by its start
        _vetify(data, backups, stores, "backup", "push")
        push_seconds = (utcnow() - pushed).total_seconds()
        time.sleep(WRITING)
        # The disaster: the server and its database killed, the cluster's disk gone.
        disaster = utcnow()
        os.kill(serve.pid, 9)
        writes.stop.set()
        writer.join(30)
    finally:
        serve.stop()
    EmbeddedPostgres(data / "pgdata").stop("immediate")
    shutil.rmtree(data / "pgdata")
    assert writes.statuses == {201: len(writes.acknowledged)}, "a write refused while serving"
    assert any(sent > at for sent in writes.sent.values()), "no write after T"

    found: dict[str, dict[str, float]] = {}
    machine, pulled = tmp_path / "new-machine", tmp_path / "new-machine-backups"
    # The latest in place, as after a real loss (archived into the repository from then on);
    # the state at T as a copy beside it, served with a repository of its own (nothing pushed);
    # then a new machine, from the copy off the old one.
    for name, to, served_from, archive in (
        ("latest", "latest", data, backups),
        ("at_t", at.isoformat(), tmp_path / "at_t", tmp_path / "at_t-backups"),
        ("new_machine", "latest", machine, pulled),
    ):
        began = time.monotonic()
        target = ["--target", str(served_from)] if name == "at_t" else []
        home, repository = (machine, pulled) if name == "new_machine" else (data, backups)
        if name == "new_machine":
            _vetify(home, repository, stores, "backup", "pull")
        _vetify(home, repository, stores, "backup", "restore", "--to", to, *target)
        port = free_port()
        again = _serve(served_from, archive, port, stores)
        try:
            again.wait_until_ready(f"http://127.0.0.1:{port}", within=300)
            rto = time.monotonic() - began
            names = _names(f"http://127.0.0.1:{port}", token)
            assert not names & _names(f"http://127.0.0.1:{port}", other_token)
            some = next(iter(writes.ids.values()))
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                seen = http.get(
                    f"/api/v1/customers/{some}",
                    headers={"Authorization": f"Bearer {other_token}"},
                )
                assert seen.status_code == 404, seen.text
                file = http.get(
                    f"/api/v1/attachments/{attachment}/content",
                    headers={"Authorization": f"Bearer {token}"},
                )
            assert (file.status_code, file.content) == (200, content), file.text
            wall = _wall(EmbeddedPostgres(served_from / "pgdata"))
        finally:
            again.stop()
        assert wall == {"customers_seen_without_a_clinic": 0, "bypasses": 0}
        drilled = {n for n in names if n.startswith("Drill ")}
        if name == "at_t":
            missing = {n for n, acked in writes.acknowledged.items() if acked < at} - drilled
            assert not missing, f"acknowledged before T, lost: {sorted(missing)[:5]}"
            after = {n for n, sent in writes.sent.items() if sent > at} & drilled
            assert not after, f"sent after T, restored: {sorted(after)[:5]}"
            found[name] = {"rto_seconds": round(rto, 1)}
        elif name == "new_machine":
            missing = {n for n, acked in writes.acknowledged.items() if acked < at} - drilled
            assert not missing, f"acknowledged before T, lost with the machine: {missing}"
            lost = [acked for n, acked in writes.acknowledged.items() if n not in drilled]
            rpo = (disaster - min(lost)).total_seconds() if lost else 0.0
            # Writes of the last archive timeout before the push began, and every one after.
            limit = (disaster - pushed).total_seconds() + ARCHIVE_TIMEOUT + 5
            assert rpo <= limit, f"{len(lost)} writes lost, over {rpo:.1f} s"
            found[name] = {
                "rto_seconds": round(rto, 1),
                "rpo_seconds": round(rpo, 1),
                "writes_lost": len(lost),
            }
        else:
            lost = [acked for n, acked in writes.acknowledged.items() if n not in drilled]
            rpo = (disaster - min(lost)).total_seconds() if lost else 0.0
            assert rpo <= ARCHIVE_TIMEOUT + 5, f"{len(lost)} writes lost, over {rpo:.1f} s"
            found[name] = {
                "rto_seconds": round(rto, 1),
                "rpo_seconds": round(rpo, 1),
                "writes_lost": len(lost),
            }
    chaos.details.update(
        archive_timeout_seconds=ARCHIVE_TIMEOUT,
        ballast_mb=BALLAST_MB,
        base_backup_mb=round(base.size_bytes / 1e6, 1),
        base_backup_seconds=round((base.finished - base.started).total_seconds(), 1),
        writes_acknowledged=len(writes.acknowledged),
        push_seconds=round(push_seconds, 1),
        **{
            f"{name}_{key}": value
            for name, numbers in found.items()
            for key, value in numbers.items()
        },
    )
    print(f"\ndisaster-recovery drill: {chaos.details}")
