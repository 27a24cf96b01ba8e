"""The migration rollback drill (issue 22, ADR 0040): on a database with a clinic's worth of
data, the newest migration is undone and done again, and the schema and every row are as they
were. A migration that cannot go back must say so (tests/unit/test_migration_rules.py)."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db import migrate
from app.keys import service as keys
from fixtures.demo import seed_demo
from tests.harness.databases import APP_ROLE, Database

_SCHEMA = """
SELECT 'column', format('%s.%s %s %s %s', table_name, column_name, data_type,
                        is_nullable, coalesce(column_default, ''))
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'constraint', format('%s %s %s', conrelid::regclass, conname,
                                      pg_get_constraintdef(oid))
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 'policy', format('%s %s %s %s', tablename, policyname, qual, with_check)
FROM pg_policies WHERE schemaname = 'public'
UNION ALL SELECT 'grant', format('%s %s %s', table_name, grantee, privilege_type)
FROM information_schema.role_table_grants WHERE table_schema = 'public'
UNION ALL SELECT 'security', format('%s %s %s', relname, relrowsecurity, relforcerowsecurity)
FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
ORDER BY 1, 2
"""
"""What a schema is made of: columns (type, nullability, default), indexes, constraints,
row-level security and its policies, grants."""

_COLUMNS = """
SELECT table_name, string_agg(
    CASE WHEN data_type = 'bytea' THEN format('(%I IS NULL)', column_name)
         ELSE format('%I::text', column_name) END, ', ' ORDER BY column_name)
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name <> 'alembic_version'
GROUP BY table_name ORDER BY table_name
"""
"""Each table's columns as text, sealed values (bytes) as whether they are there: sealing again
draws a new nonce, so their bytes differ while what they open to does not."""


async def _snapshot(engine: AsyncEngine) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    async with engine.connect() as connection:
        schema = [(kind, what) for kind, what in (await connection.execute(text(_SCHEMA))).all()]
        rows = {}
        for table, columns in (await connection.execute(text(_COLUMNS))).all():
            # Names from the catalogue, quoted by format('%I') above.
            listed = f"SELECT concat_ws('|', {columns}) AS r FROM \"{table}\" ORDER BY r"
            rows[table] = list((await connection.execute(text(listed))).scalars())
    return schema, rows


async def test_the_newest_migration_goes_back_and_forth_keeping_schema_and_rows(
    database: Database, settings, superuser_engine: AsyncEngine
) -> None:
    keys.configure(keys.wrapper_from(settings))
    async with async_sessionmaker(superuser_engine)() as session, session.begin():
        await seed_demo(session)
    config = migrate.alembic_config(database.owner_url, APP_ROLE, keys.wrapper_from(settings))
    head = ScriptDirectory.from_config(config).get_current_head()
    previous = ScriptDirectory.from_config(config).get_revision(head).down_revision
    assert isinstance(previous, str), "one head, one parent"
    before = await _snapshot(superuser_engine)
    assert sum(len(rows) for rows in before[1].values()) > 200, "a clinic's worth of rows"

    await asyncio.to_thread(command.downgrade, config, previous)
    await asyncio.to_thread(command.upgrade, config, "head")

    after = await _snapshot(superuser_engine)
    assert after[0] == before[0]
    changed = [table for table in before[1] if after[1][table] != before[1][table]]
    assert changed == []
