"""The process lifecycle: `vetify serve` and `vetify worker` started, signalled and killed as an
operator (or Kubernetes) does, on their embedded or an external PostgreSQL (issue 16).

Found from outside: a busy port hung the server for good, a second server on the same data
directory took the first one's PostgreSQL over, shutting down with the database down took 32 to
62 s and ended in a traceback. The contract: a start-up refusal is one line and a non-zero exit;
a stop asked for with SIGTERM is met within ``VETIFY_SHUTDOWN_TIMEOUT_SECONDS``, whatever the
state (starting, serving requests, running a job, the database gone), with exit code 0, no
traceback, and no PostgreSQL of ours left running; a job cut short is retried.

Each scenario starts and stops processes of its own; none touches the shared ``live_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.auth.mails import MAIL_PASSWORD_RESET
from app.db.embedded import free_port
from fixtures.demo import DEMO_EMAIL
from tests.chaos.conftest import REQUEST_TIMEOUT, Outcome, call, smoke
from tests.harness.live import LiveServer, Vetify
from tests.harness.plugin import serving
from tests.harness.services import PostgresServer, RedisServer

DEADLINE = 6.0
"""``VETIFY_SHUTDOWN_TIMEOUT_SECONDS`` of every process started here."""
EXITED_WITHIN = DEADLINE + 10.0
"""The deadline, plus the interpreter's own exit and PostgreSQL's stop on a busy shared machine.
Before issue 16 a shutdown with the database down took 32 to 62 s."""
REFUSED_WITHIN = 30.0
"""A refusal at start-up comes before anything slow is started."""
STARTED_WITHIN = 90.0
"""The first start initialises and migrates the embedded cluster."""
LOADED_DEADLINE = 15.0
"""Under load: requests in flight get 40% of it (6 s), and those here need about 2 s."""


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults() -> None:
    """Overrides the chaos stage's: these scenarios put no fault on the shared live server (and
    do not need it started), they make processes of their own and stop them."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedded cluster for the module: made by the first `vetify serve`, reused after."""
    return tmp_path_factory.mktemp("lifecycle") / "state"


def _environment(**settings: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("VETIFY_") and name not in ("DATABASE_URL", "REDIS_URL")
    }
    return {**env, "VETIFY_ENV": "test", **_settings(**settings)}


def _embedded_serve(data_dir: Path, port: int) -> Vetify:
    """`vetify serve` as a newcomer runs it: no database URL, its PostgreSQL in ``data_dir``."""
    return Vetify(["serve", "--port", str(port)], _environment(VETIFY_DATA_DIR=str(data_dir)))


def _settings(deadline: float = DEADLINE, **more: str) -> dict[str, str]:
    """``VETIFY_*`` for a process here: its shutdown deadline, and ``more``."""
    return {"VETIFY_SHUTDOWN_TIMEOUT_SECONDS": str(deadline), **more}


def _postgres_left(data_dir: Path) -> list[str]:
    """What is left of the embedded cluster's server: its pid file, and every process whose
    command line names the cluster (the postmaster: ``postgres -D <pgdata> ...``)."""
    pgdata = str((data_dir / "pgdata").resolve()).encode()
    left = ["postmaster.pid"] if (data_dir / "pgdata" / "postmaster.pid").exists() else []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if pgdata in argv:
            left.append(f"process {proc.name}: {b' '.join(argv)[:200].decode(errors='replace')}")
    return left


def _postmaster_pid(data_dir: Path) -> str:
    return (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0]


def _assert_clean(output: str) -> None:
    assert "Traceback" not in output, output[-4000:]


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@contextmanager
def _listening(port: int) -> Iterator[socket.socket]:
    """Something else already listening on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


# -- start-up ---------------------------------------------------------------------------------
def test_a_busy_port_is_refused_in_one_line(data_dir: Path, chaos: Outcome) -> None:
    port = free_port()
    with _listening(port):
        serve = _embedded_serve(data_dir, port).start()
        try:
            done = serve.exit(REFUSED_WITHIN)
        finally:
            serve.stop()
    chaos.details.update(exit_code=done.code, seconds=round(done.seconds, 1))
    assert done.code != 0
    assert str(port) in _last_line(serve.output)
    assert "in use" in _last_line(serve.output)
    _assert_clean(serve.output)
    assert _postgres_left(data_dir) == []


STARTING = {
    "postgres": "starting the embedded PostgreSQL",
    "migrations": "Will assume transactional DDL",
    "jobs": "Starting worker on",
}
"""Moments of `vetify serve`'s start-up, by what it logs then: its PostgreSQL starting, the
migrations, and the in-process job worker starting (the race of issue 16's busy port)."""


@pytest.mark.parametrize("moment", ["jobs"] if smoke() else list(STARTING))
def test_sigterm_during_start_up_stops_cleanly(data_dir: Path, moment: str, chaos: Outcome) -> None:
    serve = _embedded_serve(data_dir, free_port()).start()
    try:
        serve.wait_for(STARTING[moment], STARTED_WITHIN)
        serve.send(signal.SIGTERM)
        done = serve.exit(EXITED_WITHIN)
    finally:
        serve.stop()
    chaos.details.update(moment=moment, exit_code=done.code, seconds=round(done.seconds, 1))
    assert done.code == 0, serve.output[-4000:]
    _assert_clean(serve.output)
    assert _postgres_left(data_dir) == []


# -- one server per data directory --------------------------------------------------------------
def test_a_second_server_on_the_same_data_directory_is_refused(
    data_dir: Path, chaos: Outcome
) -> None:
    first_port, second_port = free_port(), free_port()
    first = _embedded_serve(data_dir, first_port).start()
    second = _embedded_serve(data_dir, second_port)
    try:
        first.wait_until_ready(f"http://127.0.0.1:{first_port}", STARTED_WITHIN)
        postmaster = _postmaster_pid(data_dir)
        second.start()
        refused = second.exit(REFUSED_WITHIN)
        # The first one keeps its PostgreSQL and keeps answering.
        ready = httpx.get(f"http://127.0.0.1:{first_port}/health/ready", timeout=REQUEST_TIMEOUT)
        same_postmaster = _postmaster_pid(data_dir) == postmaster
        first.send(signal.SIGTERM)
        stopped = first.exit(EXITED_WITHIN)
    finally:
        second.stop()
        first.stop()
    chaos.details.update(refused_after=round(refused.seconds, 1), message=_last_line(second.output))
    assert refused.code != 0
    assert f"pid {first.pid}" in _last_line(second.output)
    assert f"port {first_port}" in _last_line(second.output)
    _assert_clean(second.output)
    _assert_clean(first.output)
    assert ready.status_code == 200
    assert same_postmaster
    assert stopped.code == 0
    assert _postgres_left(data_dir) == []


def test_after_sigkill_the_next_start_takes_over_the_postgresql_left_behind(
    data_dir: Path, chaos: Outcome
) -> None:
    port = free_port()
    killed = _embedded_serve(data_dir, port).start()
    after = _embedded_serve(data_dir, port)
    try:
        killed.wait_until_ready(f"http://127.0.0.1:{port}", STARTED_WITHIN)
        killed.send(signal.SIGKILL)
        killed.exit(EXITED_WITHIN)
        # As the README says: nothing stops the cluster of a killed server...
        left_behind = _postgres_left(data_dir)
        started = time.monotonic()
        # ... and the next start, on the same data directory and port, takes it over.
        after.start().wait_until_ready(f"http://127.0.0.1:{port}", STARTED_WITHIN)
        ready_after = time.monotonic() - started
        after.send(signal.SIGTERM)
        done = after.exit(EXITED_WITHIN)
    finally:
        killed.stop()
        after.stop()
    chaos.details.update(ready_after=round(ready_after, 1), stopped_in=round(done.seconds, 1))
    assert "postmaster.pid" in left_behind
    assert done.code == 0
    _assert_clean(after.output)
    assert _postgres_left(data_dir) == []


# -- shutdown on an external database -----------------------------------------------------------
async def _stalled_upload(live: LiveServer, token: str) -> bytes:
    """A request whose body stops half way (a slow client): still in flight when the requests'
    share of the deadline ends. The server's whole answer, read until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    try:
        writer.write(
            f"POST /api/v1/customers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), LOADED_DEADLINE + REQUEST_TIMEOUT)
    finally:
        writer.close()


def test_sigterm_under_load_answers_the_requests_in_flight_and_exits_0(
    postgres_server: PostgresServer, redis_server: RedisServer, chaos: Outcome
) -> None:
    clients = 6 if smoke() else 16

    async def load(live: LiveServer, serve: Vetify, token: str) -> tuple[list[Any], bytes]:
        async with httpx.AsyncClient(
            base_url=live.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=clients),
        ) as api:

            def pets() -> Coroutine[Any, Any, dict[str, Any]]:
                return call(api, "GET", "/api/v1/pets", params={"limit": 5})

            # Once at full speed, so the pool holds a connection for each client: a new one
            # through the slowed proxy would take seconds.
            await asyncio.gather(*(pets() for _ in range(clients)))
            # Each request makes several round trips to the database: in flight for 2 s or so.
            live.db_proxy.latency = 0.1
            stalled = asyncio.create_task(_stalled_upload(live, token))
            requests = [asyncio.create_task(pets()) for _ in range(clients)]
            await asyncio.sleep(0.3)
            serve.send(signal.SIGTERM)
            return await asyncio.gather(*requests), await stalled

    settings = _settings(LOADED_DEADLINE, VETIFY_JOBS_IN_PROCESS="true")
    with serving(postgres_server, redis_server, **settings) as live:
        assert live.serve is not None
        answers, cut_short = asyncio.run(load(live, live.serve, live.demo_token("lifecycle")))
        done = live.serve.exit(LOADED_DEADLINE + 10)
        output = live.serve.output
    head = cut_short.partition(b"\r\n\r\n")[0].decode().lower()
    chaos.details.update(
        answers=sorted(answer["kind"] for answer in answers),
        cut_short=head.splitlines()[0] if head else "",
        stopped_in=round(done.seconds, 1),
    )
    assert all(answer["kind"] == "200" for answer in answers), answers
    # Every one of them was still being answered when the signal came.
    assert all(answer["seconds"] > 0.3 for answer in answers), answers
    # The upload that could not finish in time is told to retry, not given a 500.
    assert head.startswith("http/1.1 503"), cut_short
    assert "content-type: application/problem+json" in head
    assert "retry-after:" in head
    assert done.code == 0
    _assert_clean(output)


# -- jobs running at shutdown ---------------------------------------------------------------
class MuteRelay:
    """A mail relay that takes connections and never says a word: a mail job waits on it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                self.held.append(self.server.accept()[0])

    def __enter__(self) -> MuteRelay:
        return self

    def __exit__(self, *_: object) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


def _mailing(relay: MuteRelay) -> dict[str, str]:
    """Settings that send mail through ``relay``, and wait long for it."""
    return {
        "VETIFY_SMTP_HOST": "127.0.0.1",
        "VETIFY_SMTP_PORT": str(relay.port),
        "VETIFY_SMTP_STARTTLS": "false",
        "VETIFY_SMTP_TIMEOUT_SECONDS": "120",
    }


async def _owner_query(live: LiveServer, sql: str, *args: object) -> list[asyncpg.Record]:
    """``sql`` as the schema owner, on the live server's database (not through its proxy)."""
    url = live.database.owner_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


def _mail_jobs(live: LiveServer) -> list[tuple[str, int]]:
    """(status, attempts) of every password-reset mail job."""
    rows = asyncio.run(
        _owner_query(
            live,
            "SELECT status::text, attempts FROM procrastinate_jobs WHERE task_name = $1",
            MAIL_PASSWORD_RESET,
        )
    )
    return [(row["status"], row["attempts"]) for row in rows]


def _a_mail_job_running(live: LiveServer, relay: MuteRelay) -> None:
    """Ask for a password reset; return once a worker runs its mail job, and waits on
    ``relay``."""
    asked = httpx.post(
        f"{live.url}/api/v1/auth/password-reset",
        json={"email": DEMO_EMAIL},
        timeout=REQUEST_TIMEOUT,
    )
    assert asked.status_code == 202, asked.text
    started = time.monotonic()
    while not relay.held:
        assert time.monotonic() - started < STARTED_WITHIN, f"mail jobs: {_mail_jobs(live)}"
        time.sleep(0.1)
    assert _mail_jobs(live) == [("doing", 0)]


def _wait_for_mail_jobs(live: LiveServer, expected: list[tuple[str, int]]) -> None:
    started = time.monotonic()
    while (jobs := _mail_jobs(live)) != expected:
        assert time.monotonic() - started < STARTED_WITHIN, f"mail jobs: {jobs}"
        time.sleep(0.2)


def test_sigterm_with_the_database_down_meets_the_deadline_and_the_job_is_retried_later(
    postgres_server: PostgresServer, redis_server: RedisServer, chaos: Outcome
) -> None:
    """`vetify serve` with its in-process worker, and `vetify worker`, one of them running a job,
    both on a database that has gone away (every connection reset, every new one refused). The
    job's abort cannot be recorded: the next worker to start retries it."""
    with (
        MuteRelay() as relay,
        serving(
            postgres_server,
            redis_server,
            **_settings(VETIFY_JOBS_IN_PROCESS="true", **_mailing(relay)),
        ) as live,
    ):
        assert live.serve is not None
        processes = {"serve": live.serve, "worker": live.worker()}
        next_worker = live.worker()
        try:
            processes["worker"].start().wait_for("Starting worker on", STARTED_WITHIN)
            live.serve.wait_for("Starting worker on", STARTED_WITHIN)
            _a_mail_job_running(live, relay)
            live.db_proxy.refuse = True
            live.db_proxy.reset_all()
            # Until the server itself says the database is gone.
            started = time.monotonic()
            while httpx.get(f"{live.url}/health/ready", timeout=REQUEST_TIMEOUT).status_code != 503:
                assert time.monotonic() - started < REQUEST_TIMEOUT, "still ready"
                time.sleep(0.2)
            for process in processes.values():
                process.send(signal.SIGTERM)
            done = {name: process.exit(EXITED_WITHIN) for name, process in processes.items()}
            live.db_proxy.refuse = False
            left = _mail_jobs(live)
            # As if procrastinate's stalled-worker timeout (30 s) had passed since.
            asyncio.run(
                _owner_query(
                    live,
                    "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'",
                )
            )
            next_worker.start()
            _wait_for_mail_jobs(live, [("doing", 1)])
        finally:
            live.db_proxy.refuse = False
            for process in (*processes.values(), next_worker):
                process.stop()
    chaos.details.update({name: round(exit.seconds, 1) for name, exit in done.items()})
    for name, process in processes.items():
        assert done[name].code == 0, f"{name}: {process.output[-4000:]}"
        _assert_clean(process.output)
    assert left == [("doing", 0)], "the abort was recorded with the database away?"


def test_a_job_running_at_sigterm_is_abandoned_to_be_retried(
    postgres_server: PostgresServer, redis_server: RedisServer, chaos: Outcome
) -> None:
    with (
        MuteRelay() as relay,
        serving(postgres_server, redis_server, **_settings(**_mailing(relay))) as live,
    ):
        worker = live.worker()
        try:
            worker.start().wait_for("Starting worker on", STARTED_WITHIN)
            _a_mail_job_running(live, relay)
            worker.send(signal.SIGTERM)
            done = worker.exit(EXITED_WITHIN)
        finally:
            worker.stop()
        after = _mail_jobs(live)
    chaos.details.update(stopped_in=round(done.seconds, 1), job=after)
    assert done.code == 0, worker.output[-4000:]
    _assert_clean(worker.output)
    # Aborted by the shutdown, it counts as a failed try and waits for its retry.
    assert after == [("todo", 1)]
