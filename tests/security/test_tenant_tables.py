"""The two walls between clinics below the HTTP layer, each proven on its own, table by table.

* The database wall: every table (found in the database's own catalogue, so a table a
  migration adds is checked without anyone listing it) either is an acknowledged global table
  or has a ``tenant_id`` with row-level security enabled and forced, a policy holding every
  command to the clinic in ``app.tenant_id`` and no unreviewed policy widening it; the
  service's role cannot bypass it. Raw SQL as that role sees, writes and moves
  rows only in the current clinic, and nothing without one.
* The application wall: ORM statements are scoped to the session's clinic even where the
  database shows everything (a superuser connection, to which row-level security does not
  apply), for every tenant model.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from app.db.base import Base
from app.db.tenancy import enter_tenant
from tests.harness import tally
from tests.harness.databases import APP_ROLE, OWNER_ROLE
from tests.security.estate import TENANT_MODELS, Estate, tenant_tables

MODELS = TENANT_MODELS
TABLES = sorted(model.__tablename__ for model in MODELS)
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")
TENANT_RULE = "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"
GLOBAL_TABLES = {
    "alembic_version": "migration bookkeeping",
    "clinics": "the tenants themselves; their own policies on id (tested below)",
    "users": "identity: one person may work for several clinics",
    "account_tokens": "a user's mailed links (verify the address, reset the password): as"
    " global as the user, used before any clinic is chosen (ADR 0013)",
    "stripe_events": "Stripe's webhook inbox: an event names its clinic only inside its payload;"
    " billing code alone reads it (ADR 0012)",
    "data_keys": "field encryption's data keys, wrapped: a clinic's is bound to it by its"
    " wrapping, and opens only with the process's key-encryption keys (ADR 0028)",
    "audit_anchors": "signed heads of the clinics' trails (ids, numbers, hashes), written by"
    " `vetify audit anchor` as the owner; the service role may not touch it (ADR 0027)",
    "security_events": "security events of no clinic (a log-in refused, an account locked): the"
    " service may only insert them, operators read them (issue 20, ADR 0027)",
    "clinic_usage": "operators' counts of requests and jobs per clinic per day: ids and numbers,"
    " written for many clinics in one flush, read by no route (ADR 0026)",
    "procrastinate_jobs": "the job queue: task names and ids, never clinic data (ADR 0012)",
    "procrastinate_events": "the job queue's history of job state changes",
    "procrastinate_periodic_defers": "the job queue's record of periodic jobs deferred",
    "procrastinate_workers": "the job queue's live workers (heartbeats)",
}
"""Tables without ``tenant_id``, each acknowledged with its reason."""
OTHER_POLICIES = {
    ("memberships", "member_self"): "a user sees their own memberships in every clinic, to log"
    " in and to switch clinic (test_a_user_sees_only_their_own_memberships_elsewhere)",
}
"""Permissive policies besides the tenant rule (each widens what a role sees), and why."""

tally.size(
    "tenancy table wall",
    f"{len(TABLES)} tenant tables x 5 checks (policy, raw read, insert, move, no context)"
    f" + {len(MODELS)} models x 2 ORM checks",
)


async def _in_clinic(engine: AsyncEngine, clinic_id: uuid.UUID | None, sql: str, **params):
    """Run ``sql`` as the engine's role with ``app.tenant_id`` set (or not), then roll back."""
    async with engine.connect() as connection, connection.begin() as transaction:
        if clinic_id is not None:
            await connection.execute(
                text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(clinic_id)}
            )
        try:
            return (await connection.execute(text(sql), params)).all()
        finally:
            await transaction.rollback()


async def _insertable(engine: AsyncEngine, table: str) -> list[str]:
    """The columns of ``table`` the service role may insert (by table or by column)."""
    rows = await _in_clinic(
        engine,
        None,
        "SELECT column_name FROM information_schema.column_privileges WHERE table_name = :t"
        " AND grantee = :role AND privilege_type = 'INSERT' ORDER BY column_name",
        t=table,
        role=APP_ROLE,
    )
    return [name for (name,) in rows]


async def _count(engine: AsyncEngine, table: str, clinic_id: uuid.UUID) -> int:
    rows = await _in_clinic(
        engine, None, f'SELECT count(*) FROM "{table}" WHERE tenant_id = :c', c=clinic_id
    )
    return int(rows[0][0])


# -- the catalogue ---------------------------------------------------------------------------------
async def test_every_tenant_table_in_the_database_is_a_model(superuser_engine) -> None:
    assert await tenant_tables(superuser_engine) == TABLES


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
                "SELECT tablename, policyname, permissive, cmd, coalesce(qual, ''),"
                " coalesce(with_check, qual, '') FROM pg_policies WHERE schemaname = 'public'"
            )
        )
    ).all()
    gaps = []
    for table, enabled, forced, tenant in tables:
        if not tenant:
            if table not in GLOBAL_TABLES:
                gaps.append(f"{table}: no tenant_id and not an acknowledged global table")
            continue
        if not (enabled and forced):
            gaps.append(f"{table}: row-level security not enabled and forced")
        own = [p[1:] for p in policies if p[0] == table]
        for command in COMMANDS:
            if not [
                name
                for name, permissive, cmd, using, check in own
                if permissive == "PERMISSIVE"
                and cmd in {command, "ALL"}
                and (command == "INSERT" or TENANT_RULE in using)
                and (command in {"SELECT", "DELETE"} or TENANT_RULE in check)
            ]:
                gaps.append(f"{table}: no policy holds {command} to app.tenant_id")
        gaps += [
            f"{table}: policy {name} widens what is visible and is not reviewed"
            for name, permissive, _cmd, using, _check in own
            if permissive == "PERMISSIVE"
            and TENANT_RULE not in using
            and (table, name) not in OTHER_POLICIES
        ]
    return gaps


async def test_every_tenant_table_is_walled_by_row_level_security(superuser_engine) -> None:
    async with superuser_engine.connect() as connection:
        assert await rls_gaps(connection) == []


async def test_the_catalogue_check_catches_what_a_migration_gets_wrong(
    database, superuser_engine
) -> None:
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.begin() as connection:
            for statement in (
                "CREATE TABLE boarding_notes (id uuid PRIMARY KEY, tenant_id uuid NOT NULL)",
                "CREATE TABLE audit_scratch (id uuid PRIMARY KEY)",
                "CREATE POLICY everyone ON pets FOR SELECT USING (true)",
                "DROP POLICY tenant_isolation ON customers",
                f"CREATE POLICY tenant_isolation ON customers FOR SELECT USING ({TENANT_RULE})",
            ):
                await connection.execute(text(statement))
    finally:
        await owner.dispose()
    async with superuser_engine.connect() as connection:
        gaps = await rls_gaps(connection)
    assert sorted(gaps) == sorted(
        [
            "audit_scratch: no tenant_id and not an acknowledged global table",
            "boarding_notes: row-level security not enabled and forced",
            *(
                f"boarding_notes: no policy holds {command} to app.tenant_id"
                for command in COMMANDS
            ),
            *(
                f"customers: no policy holds {command} to app.tenant_id"
                for command in ("INSERT", "UPDATE", "DELETE")
            ),
            "pets: policy everyone widens what is visible and is not reviewed",
        ]
    )


async def test_every_model_table_is_known_to_the_wall() -> None:
    for table in Base.metadata.sorted_tables:
        assert "tenant_id" in table.columns or table.name in GLOBAL_TABLES, table.name


async def test_the_service_role_cannot_bypass_row_level_security(superuser_engine) -> None:
    [(superuser, bypass, create_role, owns, in_owner_role)] = await _in_clinic(
        superuser_engine,
        None,
        "SELECT rolsuper, rolbypassrls, rolcreaterole,"
        " (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid),"
        " pg_has_role(r.rolname, :owner, 'MEMBER')"
        " FROM pg_roles r WHERE rolname = :app",
        app=APP_ROLE,
        owner=OWNER_ROLE,
    )
    assert (superuser, bypass, create_role, owns, in_owner_role) == (False, False, False, 0, False)


# -- raw SQL as the service's role -----------------------------------------------------------------
@pytest.mark.parametrize("table", TABLES)
async def test_raw_sql_sees_only_the_current_clinic(
    app_engine, superuser_engine, estates: tuple[Estate, Estate], table
) -> None:
    ours, theirs = estates
    assert await _count(superuser_engine, table, theirs.clinic.id) > 0, (
        f"clinic B has no {table} rows, so hiding them proves nothing: teach estate.furnish"
    )

    seen = await _in_clinic(app_engine, ours.clinic.id, f'SELECT tenant_id FROM "{table}"')
    without_clinic = await _in_clinic(app_engine, None, f'SELECT * FROM "{table}"')

    assert {row[0] for row in seen} == {ours.clinic.id}
    assert len(seen) == await _count(superuser_engine, table, ours.clinic.id)
    assert without_clinic == []


@pytest.mark.parametrize("table", TABLES)
async def test_raw_sql_cannot_write_into_another_clinic(
    app_engine, superuser_engine, estates: tuple[Estate, Estate], table
) -> None:
    """Neither a copy of B's row inserted nor one of A's rows moved to B: refused (42501)."""
    ours, theirs = estates
    [(row,)] = await _in_clinic(
        superuser_engine,
        None,
        f'SELECT to_jsonb(t) FROM "{table}" t WHERE tenant_id = :b LIMIT 1',
        b=theirs.clinic.id,
    )
    row = json.loads(row) if isinstance(row, str) else row
    copy = json.dumps({**row, "id": str(uuid.uuid4())})
    before = await _count(superuser_engine, table, theirs.clinic.id)

    # The columns the service may write (a head's base is the owner's: migration 0015).
    columns = ", ".join(f'"{name}"' for name in await _insertable(superuser_engine, table))
    with pytest.raises(DBAPIError) as inserted:
        await _in_clinic(
            app_engine,
            ours.clinic.id,
            f'INSERT INTO "{table}" ({columns})'
            f' SELECT {columns} FROM jsonb_populate_record(NULL::"{table}", :row)',
            row=copy,
        )
    with pytest.raises(DBAPIError) as moved:
        await _in_clinic(
            app_engine,
            ours.clinic.id,
            f'UPDATE "{table}" SET tenant_id = :b',
            b=theirs.clinic.id,
        )

    for refusal in (inserted.value, moved.value):
        assert refusal.orig.sqlstate == "42501", refusal  # type: ignore[union-attr]
    assert "row-level security" in str(inserted.value)
    assert await _count(superuser_engine, table, theirs.clinic.id) == before


async def test_a_user_sees_only_their_own_memberships_elsewhere(
    app_engine, estates: tuple[Estate, Estate]
) -> None:
    ours, _ = estates
    me = ours.clinic.owner.user.id
    async with app_engine.connect() as connection, connection.begin():
        await connection.execute(
            text("SELECT set_config('app.user_id', :id, true)"), {"id": str(me)}
        )
        seen = (await connection.execute(text("SELECT user_id, tenant_id FROM memberships"))).all()
    assert seen == [(me, ours.clinic.id)]


async def test_the_clinics_table_shows_only_the_current_clinic(
    app_engine, estates: tuple[Estate, Estate]
) -> None:
    ours, _ = estates
    seen = await _in_clinic(app_engine, ours.clinic.id, "SELECT id FROM clinics")
    assert seen == [(ours.clinic.id,)]
    assert await _in_clinic(app_engine, None, "SELECT id FROM clinics") == []


# -- the ORM, where the database would show everything ---------------------------------------------
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
async def test_orm_statements_are_scoped_without_help_from_the_database(
    superuser_engine, estates: tuple[Estate, Estate], model
) -> None:
    ours, theirs = estates
    async with async_sessionmaker(superuser_engine)() as session, session.begin():
        unscoped = {
            row[0]
            for row in (
                await session.execute(
                    text(f'SELECT DISTINCT tenant_id FROM "{model.__tablename__}"')
                )
            ).all()
        }
        assert theirs.clinic.id in unscoped, "the database is filtering: this proves nothing"
        hidden = (await session.scalars(select(model))).all()
        await enter_tenant(session, ours.clinic.id)
        seen = [row.tenant_id for row in (await session.scalars(select(model))).all()]
        counted = await session.scalar(select(func.count()).select_from(model))

    assert hidden == []
    assert seen
    assert set(seen) == {ours.clinic.id}
    assert counted == len(seen)
