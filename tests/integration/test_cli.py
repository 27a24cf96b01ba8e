"""`vetify`: the embedded default a newcomer runs, and the commands around it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.db.embedded import EmbeddedPostgres, claim, free_port
from app.db.migrate import head_revisions
from app.settings import Settings
from fixtures.demo import DEMO_EMAIL, DEMO_PASSWORD
from tests.harness.api import login_sync
from tests.harness.live import Vetify


def test_embedded_database_is_made_migrated_and_stopped(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "state")
    with cli.database(settings) as ready:
        assert ready.database_url is not None
        assert ready.database_owner_url is not None
        app_url = ready.database_url.get_secret_value()
        assert app_url.startswith("postgresql+asyncpg://vetify_app@")
        asyncio.run(cli._seed_demo(ready, "http://127.0.0.1:1/docs"))
        asyncio.run(cli._seed_demo(ready, "http://127.0.0.1:1/docs"))

        async def schema_state() -> tuple[str, bool]:
            engine = create_async_engine(ready.database_owner_url.get_secret_value())
            try:
                async with engine.connect() as connection:
                    version = await connection.scalar(
                        text("SELECT version_num FROM alembic_version")
                    )
                    superuser = await connection.scalar(
                        text("SELECT rolsuper FROM pg_roles WHERE rolname = 'vetify_app'")
                    )
                return version, superuser
            finally:
                await engine.dispose()

        version, superuser = asyncio.run(schema_state())
        assert {version} == head_revisions()
        assert superuser is False
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
    """The README's run command, as a newcomer runs it (minus the install)."""
    port = free_port()
    env = {**os.environ, "VETIFY_DATA_DIR": str(tmp_path / "state")}
    env.pop("VETIFY_DATABASE_URL", None)
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-m", "app.cli", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vetify demo did not become ready"
            time.sleep(0.25)
        docs = httpx.get(f"{base}/docs", timeout=5)
        spec = httpx.get(f"{base}/openapi.json", timeout=5).json()
        with httpx.Client(base_url=base, timeout=10) as http:
            login = login_sync(http, DEMO_EMAIL, DEMO_PASSWORD)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert docs.status_code == 200
    assert "/api/v1/pets" in spec["paths"]
    assert login.status_code == 200
    assert login.json()["clinic"]["name"] == "Riverside Veterinary Clinic"
    assert "Finished server process" in output
    assert process.returncode == 0, "a stop asked for and done is a success"
    assert not EmbeddedPostgres(tmp_path / "state" / "pgdata").is_running()


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
