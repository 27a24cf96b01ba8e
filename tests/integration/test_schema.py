"""The schema as the migrations make it: no drift from the models, RLS on every tenant table,
and a service role that cannot get around it. Read from the catalogue, so a new table is
checked without anyone adding it here."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.db import migrate
from app.db.base import Base
from tests.harness.databases import APP_ROLE, OWNER_ROLE

GLOBAL_TABLES = {
    "alembic_version": "migration bookkeeping",
    "clinics": "the tenants themselves; own policies on id (tests in test_tenancy)",
    "users": "identity: one person may work for several clinics",
}
TENANT = "NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid"


async def rls_gaps(connection: AsyncConnection) -> list[str]:
    """Every way the catalogue falls short of the tenancy rule, one line per problem."""
    tables = (
        await connection.execute(
            text(
                """
                SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                       EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                               AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS tenant
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                ORDER BY c.relname
                """
            )
        )
    ).all()
    policies = (
        await connection.execute(
            text(
                "SELECT tablename, cmd, qual, with_check FROM pg_policies"
                " WHERE schemaname = 'public'"
            )
        )
    ).all()
    gaps = []
    for name, enabled, forced, tenant in tables:
        if not tenant:
            if name not in GLOBAL_TABLES:
                gaps.append(f"{name}: no tenant_id and not an acknowledged global table")
            continue
        if not (enabled and forced):
            gaps.append(f"{name}: row-level security not enabled and forced")
        isolating = [
            p
            for p in policies
            if p.tablename == name
            and p.cmd == "ALL"
            and f"(tenant_id = ({TENANT})" in (p.qual or "")
            and f"(tenant_id = ({TENANT})" in (p.with_check or "")
        ]
        if not isolating:
            gaps.append(f"{name}: no policy binding every command to app.tenant_id")
    return gaps


async def test_every_tenant_table_is_walled_by_row_level_security(superuser_engine):
    async with superuser_engine.connect() as connection:
        assert await rls_gaps(connection) == []


async def test_the_catalogue_check_catches_a_table_without_a_policy(database, superuser_engine):
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.begin() as connection:
            await connection.execute(
                text("CREATE TABLE boarding_notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL)")
            )
            await connection.execute(text("CREATE TABLE audit_scratch (id uuid PRIMARY KEY)"))
    finally:
        await owner.dispose()
    async with superuser_engine.connect() as connection:
        gaps = await rls_gaps(connection)
    assert "boarding_notes: row-level security not enabled and forced" in gaps
    assert "boarding_notes: no policy binding every command to app.tenant_id" in gaps
    assert "audit_scratch: no tenant_id and not an acknowledged global table" in gaps


async def test_every_model_table_is_known_to_the_wall():
    for table in Base.metadata.sorted_tables:
        assert "tenant_id" in table.columns or table.name in GLOBAL_TABLES, table.name


async def test_the_service_role_cannot_bypass_rls_and_owns_nothing(superuser_engine):
    async with superuser_engine.connect() as connection:
        role = (
            await connection.execute(
                text(
                    "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = :r"
                ),
                {"r": APP_ROLE},
            )
        ).one()
        owned = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                "WHERE r.rolname = :r"
            ),
            {"r": APP_ROLE},
        )
        member_of_owner = await connection.scalar(
            text("SELECT pg_has_role(:app, :owner, 'MEMBER')"),
            {"app": APP_ROLE, "owner": OWNER_ROLE},
        )
    assert tuple(role) == (False, False, False)
    assert owned == 0
    assert member_of_owner is False


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
