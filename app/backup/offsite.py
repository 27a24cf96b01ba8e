"""The repository's copy off the machine: S3-compatible object storage, encrypted before it
leaves, by rclone (ADR 0042).

rclone's ``crypt`` remote over its ``s3`` remote: every file is encrypted client-side
(XSalsa20-Poly1305 in authenticated 64 KiB blocks, the key derived by scrypt from
``VETIFY_BACKUP_ENCRYPTION_KEY``), and the store adds its own encryption at rest. Names stay in
the clear (base backup labels and WAL segment names say nothing of a clinic), so the copy can be
listed and pruned without the key, and read only with it.

* ``push`` copies what the repository holds and the copy lacks, never changing a file already
  there (``--immutable``: a local file altered after its copy is an error, not an upload);
* ``prune`` applies the retention window to the copy itself, as :meth:`Repository.prune` does
  locally, so a new, empty repository never empties the copy;
* ``pull`` copies it back into a repository (a new machine's), and ``check`` proves the key
  opens it first: a wrong key is one clear error, before anything is copied.

A marker object (:data:`MARKER`) written through the encryption with the first push is what
the key is checked against.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess  # nosec B404
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.backup.repository import BackupError, Pruned, Repository, read_backup, retained
from app.settings import Settings

MARKER = "vetify-repository"
MARKER_TEXT = "a Vetify backup repository, encrypted with its key\n"
COPIED = ("/base/**", "/wal/**")
LEFT = ("*.partial/**", "archtemp*", ".*.tmp", "*.lock")
"""Files of the repository never copied: a base backup being taken, basic_archive's and our
own files being written, the lock."""
SECONDS = 6 * 3600


def where(settings: Settings) -> str:
    """The copy's place, as the reports and errors name it."""
    return f"s3://{settings.backup_s3_bucket}/{settings.backup_s3_prefix}"


class Offsite:
    """The repository's copy in ``VETIFY_BACKUP_S3_BUCKET``."""

    def __init__(self, settings: Settings) -> None:
        if not settings.backup_s3_bucket or settings.backup_encryption_key is None:
            raise BackupError("set VETIFY_BACKUP_S3_BUCKET and VETIFY_BACKUP_ENCRYPTION_KEY")
        binary = shutil.which("rclone")
        if binary is None:
            raise BackupError("the off-site copy needs rclone: apt-get install rclone")
        self.binary = binary
        self.where = where(settings)
        self.settings = settings
        self.environment = self._environment(settings.backup_encryption_key.get_secret_value())

    # -- what it does ------------------------------------------------------------------------
    def push(self, repository: Repository) -> None:
        """Copy into the copy what it lacks of ``repository``."""
        self.check(create=True)
        repository.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        filters = [f"--include={path}" for path in COPIED]
        excluded = [f"--exclude={pattern}" for pattern in LEFT]
        self._run("copy", "--immutable", *excluded, *filters, str(repository.root), "vetify:")

    def pull(self, into: Repository) -> None:
        """Copy the copy into ``into`` (a repository with nothing in it)."""
        if into.root.exists() and any(into.root.iterdir()):
            raise BackupError(f"{into.root} is not empty: pull into a new directory")
        self.check(create=False)
        into.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._run("copy", "--exclude", MARKER, "vetify:", str(into.root))

    def prune(self, window: dt.timedelta, now: dt.datetime) -> Pruned:
        """Remove from the copy what a restore to any time of the last ``window`` does not need
        (the rule of :meth:`Repository.prune`, applied to what the copy holds)."""
        with self._scratch() as scratch:
            self._run("copy", "--include", "/base/*.json", "vetify:", str(scratch))
            backups = [read_backup(path) for path in (scratch / "base").glob("*.json")]
        gone, oldest = retained(backups, window, now)
        for label in gone:
            self._run("delete", f"vetify:base/{label}.json")
            self._run("purge", f"vetify:base/{label}")
        if oldest is None:
            return Pruned(gone, 0)
        listed = json.loads(self._run("lsjson", "--files-only", "vetify:wal"))
        stale = sorted(
            entry["Name"]
            for entry in listed
            if len(entry["Name"]) == 24 and entry["Name"][8:] < oldest[8:]
        )
        if stale:
            with self._scratch() as scratch:
                names = scratch / "stale"
                names.write_text("".join(f"{name}\n" for name in stale))
                self._run("delete", f"--files-from-raw={names}", "vetify:wal")
        return Pruned(gone, len(stale))

    def check(self, *, create: bool) -> None:
        """The key opens the copy (its marker reads back as written); ``create``: a copy with
        no marker yet (a first push) gets one."""
        listed = json.loads(self._run("lsjson", "--files-only", "vetify:"))
        if not any(entry["Name"] == MARKER for entry in listed):
            if not create:
                raise BackupError(f"there is no Vetify backup repository in {self.where}")
            with self._scratch() as scratch:
                (scratch / MARKER).write_text(MARKER_TEXT)
                self._run("copy", str(scratch / MARKER), "vetify:")
            return
        said = self._call("cat", f"vetify:{MARKER}", retries=False)
        if said.returncode != 0 or said.stdout != MARKER_TEXT:
            raise BackupError(
                f"VETIFY_BACKUP_ENCRYPTION_KEY does not open the copy in {self.where}: a wrong"
                " key, or another repository's"
            )

    # -- rclone ------------------------------------------------------------------------------
    def _run(self, *args: str) -> str:
        """rclone's output; :class:`BackupError` with its last words if it failed."""
        result = self._call(*args)
        if result.returncode != 0:
            last = [line for line in result.stderr.splitlines() if line.strip()][-3:]
            raise BackupError(f"rclone {args[0]} ({self.where}): {' / '.join(last)}")
        return result.stdout

    def _call(self, *args: str, retries: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - rclone, fixed arguments  # nosec B603
            [self.binary, *self._flags(retries), *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=self.environment,
            check=False,
            timeout=SECONDS,
            umask=0o077,  # what it pulls is every clinic's data: for this user alone
        )

    def _flags(self, retries: bool) -> list[str]:
        flags = ["--config=/dev/null", "--s3-no-check-bucket"]
        if not retries:
            flags += ["--retries=1", "--low-level-retries=1"]
        # The AWS SDK rclone is built on refuses AWS_CA_BUNDLE; its own flag takes the same.
        bundle = os.environ.get("AWS_CA_BUNDLE")
        if bundle:
            flags.append(f"--ca-cert={bundle}")
        return flags

    def _environment(self, key: str) -> dict[str, str]:
        settings = self.settings
        key_id, secret = settings.backup_s3_access_key_id, settings.backup_s3_secret_access_key
        store = {
            "TYPE": "s3",
            "PROVIDER": "AWS" if settings.backup_s3_endpoint_url is None else "Other",
            "ENV_AUTH": "false" if key_id else "true",
            "ENDPOINT": settings.backup_s3_endpoint_url or "",
            "REGION": settings.backup_s3_region or "",
            "ACCESS_KEY_ID": key_id.get_secret_value() if key_id else "",
            "SECRET_ACCESS_KEY": secret.get_secret_value() if secret else "",
            "SERVER_SIDE_ENCRYPTION": (
                ""
                if settings.backup_s3_server_side_encryption == "none"
                else settings.backup_s3_server_side_encryption
            ),
        }
        crypt = {
            "TYPE": "crypt",
            "REMOTE": f"vetifys3:{settings.backup_s3_bucket}/{settings.backup_s3_prefix}",
            "PASSWORD": self._obscured(key),
            "FILENAME_ENCRYPTION": "off",
            "DIRECTORY_NAME_ENCRYPTION": "false",
        }
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("RCLONE_") and name != "AWS_CA_BUNDLE"
        }
        return {
            **inherited,
            **{f"RCLONE_CONFIG_VETIFYS3_{name}": value for name, value in store.items() if value},
            **{f"RCLONE_CONFIG_VETIFY_{name}": value for name, value in crypt.items()},
        }

    def _obscured(self, key: str) -> str:
        """The key as rclone's configuration takes it (reversible "obscuring", not secrecy:
        it never leaves this process's children)."""
        return subprocess.run(  # noqa: S603 - rclone, fixed arguments  # nosec B603
            [self.binary, "obscure", "-"],
            input=key,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        directory = Path(tempfile.mkdtemp(prefix="vetify-offsite-"))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)
