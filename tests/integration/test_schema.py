"""The schema as the migrations make it: no drift from the models, downgrades that work, and
append-only grants. (Row-level security on every table: tests/security/test_tenant_tables.py.)"""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text

from app.db import migrate
from tests.harness.databases import APP_ROLE


async def test_append_only_tables_refuse_updates_and_deletes(app_engine):
    async with app_engine.connect() as connection:
        for table in ("consent_events", "record_addenda"):
            for privilege in ("UPDATE", "DELETE"):
                denied = await connection.scalar(
                    text("SELECT NOT has_table_privilege(current_user, :t, :p)"),
                    {"t": table, "p": privilege},
                )
                assert denied, f"{privilege} on {table} is allowed"
        assert await connection.scalar(
            text("SELECT NOT has_table_privilege(current_user, 'medical_records', 'DELETE')")
        )


async def test_models_and_migrations_do_not_drift(database):
    # alembic check: autogenerate against the migrated database must find nothing to do.
    await asyncio.to_thread(migrate.check, database.owner_url)


async def test_migrations_downgrade_and_upgrade_again(database):
    config = migrate.alembic_config(database.owner_url, APP_ROLE)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(migrate.upgrade, database.owner_url, APP_ROLE)
    await asyncio.to_thread(migrate.check, database.owner_url)
