"""Per-clinic usage (ADR 0026): requests and job runs counted per clinic and UTC day in each
process, added to ``clinic_usage`` by flushes that sum across processes, kept when a flush
fails; storage summed at report time; `vetify usage` prints it all, as the backup role."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import cli
from app.attachments.models import ScanStatus
from app.billing.jobs import MAIL_TRIAL_ENDING
from app.kit.usage import Usage
from app.observability.usage import flush, flush_or_keep
from app.observability.usage_report import report
from app.queue import enqueue
from tests.harness.plugin import asgi_client
from tests.harness.queue import drain


async def _table(superuser_engine) -> dict[tuple[uuid.UUID, dt.date], tuple[int, int]]:
    async with superuser_engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT clinic_id, day, requests, jobs FROM clinic_usage")
        )
        return {(row.clinic_id, row.day): (row.requests, row.jobs) for row in rows}


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


async def test_requests_of_two_clinics_are_counted_apart_and_flushed_at_shutdown(
    configured_app, world, superuser_engine
):
    first, second = await world.clinic(), await world.clinic()
    # An hour between flushes: only the shutdown's flush can have written them.
    async with configured_app(usage_flush_seconds=3600) as app, asgi_client(app) as http:
        for _ in range(3):
            assert (await http.get("/api/v1/pets", headers=first.owner.headers)).status_code == 200
        assert (await http.get("/api/v1/pets", headers=second.owner.headers)).status_code == 200
        # Not authenticated: no clinic to count it for.
        assert (await http.get("/api/v1/pets")).status_code == 401
        assert await _table(superuser_engine) == {}
    assert await _table(superuser_engine) == {
        (first.id, _today()): (3, 0),
        (second.id, _today()): (1, 0),
    }


async def test_flushes_of_two_processes_add_up(world, app_engine, superuser_engine):
    clinic = await world.clinic()
    one, other = Usage(), Usage()
    for _ in range(2):
        one.request(clinic.id)
    other.request(clinic.id)
    other.job(clinic.id)
    assert await flush(app_engine, one) == 1
    assert await flush(app_engine, other) == 1
    assert await flush(app_engine, other) == 0  # nothing new: nothing written
    assert await _table(superuser_engine) == {(clinic.id, _today()): (3, 1)}


async def test_a_failed_flush_keeps_its_counts_for_the_next(
    world, database, app_engine, superuser_engine, caplog
):
    clinic = await world.clinic()
    counted = Usage()
    counted.request(clinic.id)
    gone = create_async_engine(database.app_url.rsplit("/", 1)[0] + "/no_such_database")
    try:
        await flush_or_keep(gone, counted)  # says so, raises nothing
    finally:
        await gone.dispose()
    assert "usage not flushed" in caplog.text
    counted.request(clinic.id)  # counted meanwhile
    await flush(app_engine, counted)
    assert await _table(superuser_engine) == {(clinic.id, _today()): (2, 0)}


async def test_counts_go_to_the_day_they_were_made_in(world, app_engine, superuser_engine, clock):
    clinic = await world.clinic()
    clock.now = dt.datetime(2026, 12, 6, 23, 59, 59, tzinfo=dt.UTC)
    counted = Usage()
    counted.request(clinic.id)
    clock.advance(dt.timedelta(seconds=2))  # past midnight, before the flush
    counted.request(clinic.id)
    counted.request(clinic.id)
    await flush(app_engine, counted)
    assert await _table(superuser_engine) == {
        (clinic.id, dt.date(2026, 12, 6)): (1, 0),
        (clinic.id, dt.date(2026, 12, 7)): (2, 0),
    }


async def test_job_runs_are_counted_for_the_clinic_they_name(
    world, settings, app_engine, superuser_engine
):
    clinic = await world.clinic()
    async with world.session() as session:
        for _ in range(2):
            await enqueue(session, MAIL_TRIAL_ENDING, clinic_id=str(clinic.id))
    counted = Usage()
    await drain(settings, counted)
    await flush(app_engine, counted)
    assert await _table(superuser_engine) == {(clinic.id, _today()): (0, 2)}


async def _attachments(world, clinic, sizes: list[int], **fields) -> None:
    record = await world.record(clinic)
    for size in sizes:
        await world.attach(clinic, record.id, content=b"x" * size, **fields)


async def test_the_report_sums_usage_over_the_days_and_storage_now(world, database, app_engine):
    busy, idle = await world.clinic(name="Busy Paws"), await world.clinic(name="Idle Claws")
    await _attachments(world, busy, [1000, 24])
    await _attachments(world, idle, [7])
    await _attachments(world, idle, [500], scan_status=ScanStatus.infected)  # bytes deleted
    counted = Usage()
    for _ in range(5):
        counted.request(busy.id)
    counted.job(idle.id)
    await flush(app_engine, counted)
    today = _today()

    found = await report(database.backup_url, today, today)
    rows = {row.clinic_id: row for row in found.clinics}
    assert [row.clinic_id for row in found.clinics][:2] == [busy.id, idle.id]
    assert (rows[busy.id].name, rows[busy.id].requests, rows[busy.id].jobs) == ("Busy Paws", 5, 0)
    assert rows[busy.id].storage_bytes == 1024
    assert (rows[idle.id].requests, rows[idle.id].jobs, rows[idle.id].storage_bytes) == (0, 1, 7)

    yesterday = await report(
        database.backup_url, today - dt.timedelta(days=1), today - dt.timedelta(days=1)
    )
    assert {row.clinic_id: row.requests for row in yesterday.clinics}[busy.id] == 0


async def test_vetify_usage_prints_a_table_and_json(world, app_engine, cli_env, capsys):
    clinic = await world.clinic(name="Table Vets")
    counted = Usage()
    counted.request(clinic.id)
    counted.job(clinic.id)
    await flush(app_engine, counted)
    today = _today()

    await _in_thread(cli.main, ["usage"])
    table = capsys.readouterr().out
    assert f"usage {today} (UTC" in table
    [line] = [line for line in table.splitlines() if line.startswith(str(clinic.id))]
    assert line.split()[1:] == ["Table", "Vets", "1", "1", "0"]

    await _in_thread(cli.main, ["usage", "--day", today.isoformat(), "--days", "7", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["from"] == (today - dt.timedelta(days=6)).isoformat()
    assert printed["to"] == today.isoformat()
    assert {
        "clinic_id": str(clinic.id),
        "name": "Table Vets",
        "requests": 1,
        "jobs": 1,
        "storage_bytes": 0,
    } in printed["clinics"]


async def test_vetify_usage_refuses_without_a_role_that_reads_every_clinic(cli_env, monkeypatch):
    monkeypatch.delenv("VETIFY_DATABASE_BACKUP_URL")
    with pytest.raises(SystemExit, match="set VETIFY_DATABASE_BACKUP_URL"):
        await _in_thread(cli.main, ["usage"])


async def _in_thread(function, *args):
    # The command runs its own event loop (asyncio.run), as from a shell.
    return await asyncio.to_thread(function, *args)
