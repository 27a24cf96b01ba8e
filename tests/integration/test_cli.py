"""`vetify`: the embedded default a newcomer runs, and the commands around it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.auth.service import SESSION_COOKIE
from app.db import migrate
from app.db.embedded import EmbeddedPostgres, claim, free_port
from app.db.migrate import head_revisions
from app.kit.csrf import origin_of
from app.settings import Settings
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness.api import login_sync, token_by_session_sync
from tests.harness.browser import NAVIGATION
from tests.harness.databases import APP_ROLE, Database, schema_heads
from tests.harness.live import Vetify, run_vetify, until, vetify_command, vetify_env


def test_embedded_database_is_made_migrated_and_stopped(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "state")
    with cli.database(settings) as ready:
        assert ready.database_url is not None
        assert ready.database_owner_url is not None
        app_url = ready.database_url.get_secret_value()
        assert app_url.startswith("postgresql+asyncpg://vetify_app@")
        asyncio.run(cli._seed_demo(ready, "http://127.0.0.1:1/docs"))
        asyncio.run(cli._seed_demo(ready, "http://127.0.0.1:1/docs"))

        async def schema_state() -> tuple[str, bool, bool]:
            engine = create_async_engine(ready.database_owner_url.get_secret_value())
            try:
                async with engine.connect() as connection:
                    version = await connection.scalar(
                        text("SELECT version_num FROM alembic_version")
                    )
                    superuser = await connection.scalar(
                        text("SELECT rolsuper FROM pg_roles WHERE rolname = 'vetify_app'")
                    )
                    # The backup role: it alone reads past row-level security (defect 9).
                    backup = await connection.scalar(
                        text("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'vetify_backup'")
                    )
                return version, superuser, backup
            finally:
                await engine.dispose()

        version, superuser, backup = asyncio.run(schema_state())
        assert {version} == head_revisions()
        assert superuser is False
        assert backup is True
    printed = capsys.readouterr().out
    assert "Demo clinic created" in printed
    assert "Demo clinic already there" in printed
    assert DEMO_EMAIL in printed
    assert not EmbeddedPostgres(tmp_path / "state" / "pgdata").is_running()


def test_migrate_needs_the_owner_url(monkeypatch):
    monkeypatch.setenv("VETIFY_DATABASE_URL", "postgresql+asyncpg://vetify_app@127.0.0.1:1/x")
    monkeypatch.delenv("VETIFY_DATABASE_OWNER_URL", raising=False)
    with pytest.raises(SystemExit, match="VETIFY_DATABASE_OWNER_URL"):
        cli.main(["migrate"])


def test_invalid_configuration_names_the_setting_not_its_value(monkeypatch):
    monkeypatch.setenv("VETIFY_DB_POOL_SIZE", "lots-of-secret-sauce")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["migrate"])
    assert "VETIFY_DB_POOL_SIZE:" in str(exit_info.value)
    assert "secret-sauce" not in str(exit_info.value)


def test_migrate_applies_migrations_to_a_configured_database(monkeypatch, database, capsys):
    monkeypatch.setenv("VETIFY_DATABASE_URL", database.app_url)
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", database.owner_url)
    cli.main(["migrate"])
    assert "at head" in capsys.readouterr().out


def test_vetify_demo_serves_the_demo_clinic_and_cleans_up(tmp_path):
    """The README's run command, as a newcomer runs it (minus the install), on a port of its
    own: the address it prints opens the web app, where the printed login works, and is an
    origin the API's cookie-authenticated requests are taken from."""
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own command
        vetify_command("demo", "--port", str(port)),
        env=vetify_env(VETIFY_DATA_DIR=str(tmp_path / "state")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(process, port)
        # Printed before the server started, so already in the pipe.
        opened = _printed_line(process, "Open ").split("Open ", 1)[1].split(" and log in")[0]
        docs_url = _printed_line(process, "interactive docs: ").split(": ", 1)[1].strip(" )\n")
        docs = httpx.get(docs_url, timeout=5)
        spec = httpx.get(f"{base}/openapi.json", timeout=5).json()
        page = origin_of(opened) or ""
        with httpx.Client(base_url=opened, timeout=10, headers=NAVIGATION) as browser:
            sent_to = browser.get("/").headers["location"]
            logged_in = browser.post(
                "/login",
                data={"email": DEMO_EMAIL, "password": DEMO_PASSWORD},
                headers={"Origin": page},
            )
            # Secure, so sent back by hand: a browser sends it to a loopback address over http.
            secret = logged_in.cookies[SESSION_COOKIE]
            today = browser.get("/", headers={"Cookie": f"{SESSION_COOKIE}={secret}"})
        with httpx.Client(base_url=base, timeout=10) as http:
            login = login_sync(http, DEMO_EMAIL, DEMO_PASSWORD, headers={"Origin": page})
            assert login.status_code == 200, login.text
            token = token_by_session_sync(http, login, page, "from the docs page")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert opened == f"{base}/"
    assert sent_to == "/login?next=/"
    assert today.status_code == 200
    assert "Riverside Veterinary Clinic" in today.text
    assert docs.status_code == 200
    assert "/api/v1/pets" in spec["paths"]
    assert login.json()["clinic"]["name"] == "Riverside Veterinary Clinic"
    assert token.status_code == 201, token.text
    assert "Finished server process" in output
    assert process.returncode == 0, "a stop asked for and done is a success"
    assert not EmbeddedPostgres(tmp_path / "state" / "pgdata").is_running()


def test_the_public_url_follows_host_and_port_unless_set() -> None:
    default = Settings(_env_file=None)
    assert cli._served_at(default, "192.0.2.7", 9000).public_url == "http://192.0.2.7:9000"
    assert cli._served_at(default, "::1", 9000).public_url == "http://[::1]:9000"
    chosen = Settings(_env_file=None, public_url="https://vets.example")
    assert cli._served_at(chosen, "192.0.2.7", 9000).public_url == "https://vets.example"


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_until_ready(process: subprocess.Popen[str], port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not _ready(port):
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, f"port {port} did not become ready"
        time.sleep(0.25)


def _printed_line(process: subprocess.Popen[str], marker: str) -> str:
    """The first line of ``process``'s output holding ``marker`` (read up to it)."""
    assert process.stdout is not None
    for line in process.stdout:
        if marker in line:
            return line
    raise AssertionError(f"{marker!r} was never printed")


def test_a_separate_worker_is_refused_on_the_embedded_database(tmp_path) -> None:
    # Its PostgreSQL belongs to `vetify serve`, which runs the jobs in its own process.
    with pytest.raises(SystemExit, match="set VETIFY_DATABASE_URL"):
        cli._worker(Settings(_env_file=None, data_dir=tmp_path / "state"))
    assert not (tmp_path / "state").exists()


def test_vetify_billing_metrics_reads_the_configured_database(
    database, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("VETIFY_ENV", "test")
    monkeypatch.setenv("VETIFY_DATABASE_URL", database.app_url)
    monkeypatch.setenv("VETIFY_DATABASE_OWNER_URL", database.owner_url)
    cli.main(["billing", "metrics"])
    out = capsys.readouterr().out
    assert 'vetify_stripe_events{status="failed"} 0' in out
    assert "# TYPE vetify_stripe_events gauge" in out


# -- an external database: the owner URL is used, never the embedded database -----------------
def _schema_heads(database: Database) -> set[str]:
    return asyncio.run(schema_heads(database))


def test_migrate_with_only_the_owner_url_migrates_that_database(empty_database, tmp_path):
    """Issue 16, defect 7: it migrated an embedded database instead and said all was well."""
    state = tmp_path / "state"
    result = run_vetify(
        "migrate",
        VETIFY_DATABASE_OWNER_URL=empty_database.owner_url,
        VETIFY_DATA_DIR=str(state),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _schema_heads(empty_database) == head_revisions()
    assert f"database {empty_database.name} on " in result.stdout  # logs go to stdout
    assert not state.exists(), "no embedded database is started"


@pytest.mark.parametrize("command", [("serve",), ("billing", "metrics")])
def test_a_command_given_only_the_owner_url_refuses_to_start_an_embedded_database(
    command, empty_database, tmp_path
):
    state = tmp_path / "state"
    try:
        result = run_vetify(
            *command,
            timeout=60,
            VETIFY_DATABASE_OWNER_URL=empty_database.owner_url,
            VETIFY_DATA_DIR=str(state),
        )
    finally:
        # Before the fix it started one (and served on it): leave no server behind.
        EmbeddedPostgres(state / "pgdata").stop()
    assert result.returncode != 0
    [message] = result.stderr.strip().splitlines()
    assert "VETIFY_DATABASE_URL" in message
    assert "Traceback" not in result.stderr
    assert not state.exists(), "no embedded database is started"
    assert _schema_heads(empty_database) == set()


# -- migrations started together (issue 16, defect 8) ------------------------------------------
def _external(database: Database, state: Path) -> dict[str, str]:
    return vetify_env(
        VETIFY_DATABASE_URL=database.app_url,
        VETIFY_DATABASE_OWNER_URL=database.owner_url,
        VETIFY_DATA_DIR=str(state),
    )


def test_two_migrations_started_together_on_a_fresh_database_both_succeed(empty_database, tmp_path):
    """They clashed (UniqueViolationError): the second now waits for the first's lock, then
    finds the schema at head."""
    processes = [
        subprocess.Popen(  # noqa: S603 - our own command
            vetify_command("migrate"),
            env=_external(empty_database, tmp_path / "state"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(outputs)
    assert _schema_heads(empty_database) == head_revisions()


async def test_a_migration_waits_while_another_holds_the_lock(empty_database) -> None:
    """The deterministic half of the two above: a migration that finds the lock taken touches
    nothing until it is released, then runs to head."""
    holder = await asyncpg.connect(migrate.plain_url(empty_database.superuser_url))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", migrate.MIGRATION_LOCK)
        waiting = asyncio.ensure_future(
            asyncio.to_thread(migrate.upgrade, empty_database.owner_url, APP_ROLE)
        )
        await asyncio.sleep(2)
        assert not waiting.done()
        assert await schema_heads(empty_database) == set()
        await holder.execute("SELECT pg_advisory_unlock($1)", migrate.MIGRATION_LOCK)
        await asyncio.wait_for(waiting, 120)
    finally:
        await holder.close()
    assert await schema_heads(empty_database) == head_revisions()


def test_serve_and_worker_started_together_on_a_fresh_database(empty_database, tmp_path):
    """Both migrate at start when given the owner URL; neither may fail for the other."""
    port = free_port()
    logs = {name: tmp_path / f"{name}.log" for name in ("serve", "worker")}
    processes = {}
    for name, command in (("serve", ("serve", "--port", str(port))), ("worker", ("worker",))):
        with logs[name].open("w") as log:
            processes[name] = subprocess.Popen(  # noqa: S603 - our own command
                vetify_command(*command),
                env=_external(empty_database, tmp_path / "state"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    try:
        deadline = time.monotonic() + 90
        while True:
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited:\n{logs[name].read_text()}"
            if "Starting worker" in logs["worker"].read_text() and _ready(port):
                break
            assert time.monotonic() < deadline, {n: log.read_text() for n, log in logs.items()}
            time.sleep(0.25)
        started = {name: log.read_text() for name, log in logs.items()}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(30)
    assert "Traceback" not in started["serve"] + started["worker"]
    assert _schema_heads(empty_database) == head_revisions()


def test_a_port_in_use_is_refused_in_one_line_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("VETIFY_DATABASE_URL", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as refused:
            cli.main(["serve", "--port", str(port)])
    assert str(refused.value) == (
        f"vetify serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "state" / "pgdata").exists()


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (["--workers", "2"], "VETIFY_WORKERS: above 1 needs VETIFY_REDIS_URL"),
        (["--workers", "0"], "VETIFY_WORKERS: Input should be greater than or equal to 1"),
    ],
)
def test_workers_that_cannot_serve_are_refused_before_anything_starts(
    tmp_path, monkeypatch, given, why
):
    # In memory each worker would count rate limits and log-in lockouts alone: N allowances.
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path / "state"))
    for name in ("VETIFY_DATABASE_URL", "VETIFY_REDIS_URL", "REDIS_URL", "VETIFY_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as refused:
        cli.main(["serve", "--port", "0", *given])
    assert why in str(refused.value)
    assert not (tmp_path / "state").exists()


def test_serve_with_two_workers_on_the_embedded_database(tmp_path, redis_server) -> None:
    """The supervisor starts PostgreSQL once; both workers serve from it, the first alone runs
    the jobs; a SIGTERM stops both, then PostgreSQL, and is a success."""
    port = free_port()
    served = Vetify(
        ["serve", "--port", str(port), "--workers", "2"],
        vetify_env(VETIFY_DATA_DIR=str(tmp_path / "state"), VETIFY_REDIS_URL=redis_server.url),
    )
    try:
        served.start().wait_until_ready(f"http://127.0.0.1:{port}", within=120)
        served.wait_for("worker 1 started")
        until("both workers serving", lambda: served.output.count("serving on http://") == 2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            answers = {
                http.get("/health/ready", headers={"Connection": "close"}).status_code
                for _ in range(10)
            }
        served.send(signal.SIGTERM)
        done = served.exit(within=60)
    finally:
        served.stop()
    assert answers == {200}
    assert done.code == 0, served.output[-4000:]
    assert served.output.count("starting the embedded PostgreSQL") == 1
    assert served.output.count("Starting worker on") == 1  # the job worker: in worker 0 alone
    assert served.output.count("Finished server process") == 2
    assert "Traceback" not in served.output
    assert not EmbeddedPostgres(tmp_path / "state" / "pgdata").is_running()


def test_a_data_directory_in_use_is_refused_naming_who_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VETIFY_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("VETIFY_DATABASE_URL", raising=False)
    with (
        claim(tmp_path / "state", "vetify serve (pid 4242, port 8000)"),
        pytest.raises(SystemExit) as refused,
    ):
        cli.main(["migrate"])
    assert "in use by vetify serve (pid 4242, port 8000)" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "state" / "pgdata").exists()


def test_vetify_worker_stops_on_sigterm_and_exits_0(database) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETIFY_")}
    worker = Vetify(
        ["worker"],
        {
            **env,
            "VETIFY_ENV": "test",
            "VETIFY_DATABASE_URL": database.app_url,
            "VETIFY_DATABASE_OWNER_URL": database.owner_url,
            "VETIFY_SHUTDOWN_TIMEOUT_SECONDS": "10",
        },
    )
    try:
        worker.start().wait_for("Starting worker on")
        worker.send(signal.SIGTERM)
        done = worker.exit(within=20)
    finally:
        worker.stop()
    assert done.code == 0, worker.output[-4000:]
    assert "Traceback" not in worker.output


def test_past_its_deadline_a_stop_ends_the_process_anyway(tmp_path) -> None:
    """The backstop, when a step of the shutdown hangs: its last resort, then exit code 1."""
    script = (
        "import logging, pathlib, time\n"
        "from app.kit.lifecycle import Shutdown\n"
        "logging.basicConfig()\n"
        "shutdown = Shutdown(1.0)\n"
        f"shutdown.at_deadline(lambda: pathlib.Path({str(tmp_path / 'stopped')!r}).touch())\n"
        "shutdown.request('test')\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own code
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert time.monotonic() - started < 20
    assert (tmp_path / "stopped").exists()
    assert "not stopped within VETIFY_SHUTDOWN_TIMEOUT_SECONDS (1.0 s)" in done.stderr
