"""The schema as the migrations make it: no drift from the models, downgrades that work, and
append-only grants. (Row-level security on every table: tests/security/test_tenant_tables.py.)"""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

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


async def _catalogue(database) -> tuple[list[str], tuple[object, ...] | None]:
    """As the superuser: the tables of the public schema, and for the pets table (a tenant
    table) what the service role may do, whether row-level security is forced, its policies."""
    engine = create_async_engine(database.superuser_url)
    try:
        async with engine.connect() as connection:
            tables = sorted(
                await connection.scalars(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            )
            if "pets" not in tables:
                return tables, None
            pets = await connection.execute(
                text(
                    "SELECT has_table_privilege(:role, 'pets', 'SELECT, INSERT'),"
                    " has_table_privilege(:role, 'pets', 'UPDATE, DELETE'),"
                    " relrowsecurity, relforcerowsecurity,"
                    " (SELECT array_agg(polname) FROM pg_policy WHERE polrelid = c.oid)"
                    " FROM pg_class c WHERE oid = 'public.pets'::regclass"
                ),
                {"role": APP_ROLE},
            )
            return tables, tuple(pets.one())
    finally:
        await engine.dispose()


async def test_a_fresh_database_migrates_with_the_service_roles_grants_and_policies(
    empty_database,
):
    await asyncio.to_thread(migrate.upgrade, empty_database.owner_url, APP_ROLE)
    _, pets = await _catalogue(empty_database)
    assert pets == (True, True, True, True, ["tenant_isolation"])


async def test_migrating_without_the_service_role_to_grant_to_is_refused(empty_database):
    # Tables the service cannot use would be a broken deployment found by its first request;
    # the migration that would have made them is rolled back.
    with pytest.raises(
        RuntimeError,
        match=r"^migrations need the service role to grant to \(vetify migrate sets it\)$",
    ):
        await asyncio.to_thread(migrate.upgrade, empty_database.owner_url, "")
    assert await _catalogue(empty_database) == ([], None)
