"""Each tenancy wall alone, with the other one off, for reads and writes, table by table.

Tenancy is enforced twice (ADR 0002), so a test that runs with both walls up cannot tell when
one of them falls: removing the application's filter from UPDATE and DELETE fails nothing while
row-level security holds, and widening a policy from one command to all fails nothing while the
application never issues that statement. Here each wall stands alone:

* **The database's wall**: raw SQL with no filter of its own, as the service's role, in clinic
  A, with ``app.user_id`` set too (the context in which the user-scoped policies admit rows):
  every command (SELECT, INSERT, UPDATE, DELETE) on every tenant table and on ``clinics``. B's
  rows are invisible (but for what a reviewed policy shows the user: their own membership in
  B, and B's clinic row), not updatable, not deletable, and a row for B is refused. The
  policies' commands are exactly the declared ones (``pg_policies``), but behaviour is what
  counts: each refused statement has a control on A's own rows that does work.
* **The application's wall**: the ORM filter on a connection that bypasses row-level security
  (the superuser): reads, bulk UPDATE and DELETE, and new rows, on every tenant model; then the
  service itself, over HTTP, run on that connection: every by-id route on B's resources answers
  as for a missing one and changes nothing, and every read shows nothing of B.

Tables and models come from ``Base`` (every ``TenantScoped`` model; test_tenant_tables proves the
database has no tenant table besides them), so a new tenant table is covered without anyone
listing it. The HTTP attacks are test_tenant_routes' own, run against the service without
row-level security.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import delete, func, inspect, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from app.auth.models import Role
from app.db.tenancy import enter_tenant
from app.settings import Settings
from fixtures.factories import MembershipFactory
from tests.harness import tally
from tests.harness.databases import APP_ROLE, Database
from tests.harness.plugin import _running, asgi_client
from tests.harness.world import World
from tests.security import test_tenant_routes as route_attacks
from tests.security.catalogue import Route
from tests.security.estate import TENANT_MODELS, Estate, furnished_pair

MODELS = TENANT_MODELS
TABLES = [model.__tablename__ for model in MODELS]
CLINICS = "clinics"
"""The tenants' own table: its rows are the clinics, ``id`` is its tenant column."""

POLICIES = {
    **{(table, "tenant_isolation"): "ALL" for table in [*TABLES, CLINICS]},
    ("memberships", "member_self"): "SELECT",
    (CLINICS, "member_clinics"): "SELECT",
}
"""Every row-level security policy in the schema and the commands it covers, as reviewed
(ADR 0002; why each besides the tenant rule exists: test_tenant_tables.OTHER_POLICIES)."""

tally.size(
    "tenancy walls alone",
    f"{len(TABLES) + 1} tables x 4 commands as the service's role"
    f" + {len(MODELS)} models x 4 ORM checks with row-level security bypassed"
    f" + {len(route_attacks.BY_ID)} by-id routes and {len(route_attacks.READS)} reads"
    " served with row-level security bypassed",
)


def _tenant_column(table: str) -> str:
    return "id" if table == CLINICS else "tenant_id"


# -- fixtures: one database for the module; each probe rolls back ---------------------------------
@pytest.fixture(scope="module")
async def app_role_engine(module_database: Database) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database.app_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def walled(module_world: World) -> tuple[Estate, Estate]:
    """Clinics A and B, furnished, and A's owner a member of B too: the user-scoped policies
    then admit B's rows in the user's context, so a policy widened to writes would show."""
    ours, theirs = await furnished_pair(module_world)
    await module_world.make(
        theirs.clinic, MembershipFactory, user_id=ours.clinic.owner.user.id, role=Role.receptionist
    )
    return ours, theirs


class Refused(Exception):
    def __init__(self, sqlstate: str | None, message: str) -> None:
        super().__init__(f"{sqlstate}: {message}")
        self.sqlstate = sqlstate


async def _as_app(
    engine: AsyncEngine, clinic: uuid.UUID, user: uuid.UUID, sql: str, **params: Any
) -> tuple[int, list[Any]]:
    """``sql`` as the service's role in ``clinic`` with ``user`` set, rolled back: (rowcount,
    rows); a refusal raises :class:`Refused` with its SQLSTATE."""
    async with engine.connect() as connection, connection.begin() as transaction:
        await connection.execute(
            text(
                "SELECT set_config('app.tenant_id', :clinic, true),"
                " set_config('app.user_id', :user, true)"
            ),
            {"clinic": str(clinic), "user": str(user)},
        )
        try:
            result = await connection.execute(text(sql), params)
            rows = result.all() if result.returns_rows else []
            return result.rowcount, rows
        except DBAPIError as error:
            raise Refused(getattr(error.orig, "sqlstate", None), str(error.orig)) from error
        finally:
            await transaction.rollback()


async def _rows(engine: AsyncEngine, table: str, clinic: uuid.UUID) -> list[str]:
    """The clinic's rows of ``table`` as JSON text, read as the superuser (what is stored)."""
    async with engine.connect() as connection:
        result = await connection.scalars(
            text(
                f'SELECT to_jsonb(t)::text FROM "{table}" t'
                f" WHERE {_tenant_column(table)} = :clinic ORDER BY id"
            ),
            {"clinic": clinic},
        )
        return list(result.all())


async def _may(connection: AsyncConnection, table: str, privilege: str) -> bool:
    """Whether the service's role holds ``privilege`` on the table (UPDATE: on ``updated_at``,
    which is all the probes set; some tables grant UPDATE of a few columns only)."""
    if privilege == "UPDATE":
        sql = "SELECT has_column_privilege(:role, :table, 'updated_at', 'UPDATE')"
    else:
        sql = f"SELECT has_table_privilege(:role, :table, '{privilege}')"
    return bool(await connection.scalar(text(sql), {"role": APP_ROLE, "table": table}))


# -- the database's wall ---------------------------------------------------------------------------
async def test_the_policies_cover_exactly_their_declared_commands(
    module_superuser_engine,
) -> None:
    async with module_superuser_engine.connect() as connection:
        found = {
            (table, name): command
            for table, name, command in (
                await connection.execute(
                    text(
                        "SELECT tablename, policyname, cmd FROM pg_policies"
                        " WHERE schemaname = 'public'"
                    )
                )
            ).all()
        }
    assert found == POLICIES


@pytest.mark.parametrize("table", [*TABLES, CLINICS])
async def test_the_database_alone_holds_every_command_to_the_clinic(
    app_role_engine, module_superuser_engine, walled: tuple[Estate, Estate], table: str
) -> None:
    ours, theirs = walled
    a, b, me = ours.clinic.id, theirs.clinic.id, ours.clinic.owner.user.id
    column = _tenant_column(table)
    stored = await _rows(module_superuser_engine, table, b)
    assert stored, f"clinic B has no {table} rows, so hiding them proves nothing: teach furnish"
    async with module_superuser_engine.connect() as connection:
        may = {p: await _may(connection, table, p) for p in ("UPDATE", "DELETE")}

    async def attempt(sql: str, **params: Any) -> int | str:
        try:
            count, _ = await _as_app(app_role_engine, a, me, sql, **params)
        except Refused as refused:
            return f"refused {refused.sqlstate}"
        return count

    failures = []
    # SELECT: none of B's rows, but those a reviewed policy shows the user.
    _, seen = await _as_app(
        app_role_engine,
        a,
        me,
        f'SELECT to_jsonb(t)::text FROM "{table}" t WHERE {column} = :b ORDER BY id',
        b=b,
    )
    shown = {"memberships": "user_id", CLINICS: None}
    expected = [
        row
        for row in stored
        if table in shown and (shown[table] is None or json.loads(row)[shown[table]] == str(me))
    ]
    if [row for (row,) in seen] != expected:
        failures.append(f"SELECT shows {len(seen)} of B's rows, not {len(expected)}")
    _, own = await _as_app(
        app_role_engine, a, me, f'SELECT 1 FROM "{table}" WHERE {column} = :a', a=a
    )
    if not own:
        failures.append("SELECT of A's own rows shows nothing: the probe proves nothing")

    # UPDATE and DELETE of B's rows: nothing happens (or the role may not at all).
    for command, sql in (
        ("UPDATE", f'UPDATE "{table}" SET updated_at = updated_at WHERE {column} = :b'),
        ("DELETE", f'DELETE FROM "{table}" WHERE {column} = :b'),
    ):
        outcome = await attempt(sql, b=b)
        wanted: int | str = 0 if may[command] else "refused 42501"
        if outcome != wanted:
            failures.append(f"{command} of B's rows: {outcome}, not {wanted}")
    if may["UPDATE"]:
        updated = await attempt(
            f'UPDATE "{table}" SET updated_at = updated_at WHERE {column} = :a', a=a
        )
        if not (isinstance(updated, int) and updated > 0):
            failures.append(f"UPDATE of A's own rows: {updated}: the probe proves nothing")

    # INSERT of a row of B's (a copy of one, its id new): refused by the policy's check.
    row = json.loads(stored[0])
    copy = json.dumps({**row, "id": str(uuid.uuid4())})
    inserted = await attempt(
        f'INSERT INTO "{table}" SELECT * FROM jsonb_populate_record(NULL::"{table}", :row)',
        row=copy,
    )
    if inserted != "refused 42501":
        failures.append(f"INSERT of a row of B's: {inserted}, not refused 42501")

    assert await _rows(module_superuser_engine, table, b) == stored
    assert not failures, f"{table}:\n" + "\n".join(failures)


# -- the application's wall ------------------------------------------------------------------------
async def _bypasses_rls(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        bypass = await connection.scalar(
            text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        )
    assert bypass, "row-level security applies to this connection: it proves nothing"


def _values(model: type[Any], row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the model's constructor arguments (attribute names, not columns)."""
    return {
        attribute.key: row[attribute.columns[0].name]
        for attribute in inspect(model).column_attrs
        if attribute.columns[0].name in row
    }


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
async def test_the_orm_alone_keeps_reads_and_writes_to_the_clinic(
    module_superuser_engine, walled: tuple[Estate, Estate], model: type[Any]
) -> None:
    """On the superuser's connection (no row-level security), in a session entered in A."""
    ours, theirs = walled
    a, b = ours.clinic.id, theirs.clinic.id
    await _bypasses_rls(module_superuser_engine)
    table = model.__tablename__
    stored = await _rows(module_superuser_engine, table, b)
    [ours_id] = [
        json.loads(row)["id"] for row in (await _rows(module_superuser_engine, table, a))[:1]
    ]
    theirs_id = json.loads(stored[0])["id"]

    sessions = async_sessionmaker(module_superuser_engine, expire_on_commit=False)
    async with sessions() as session, session.begin() as transaction:
        # The database's triggers off too (the audit trail's refuse every UPDATE and DELETE):
        # only the ORM's filter is left to keep the writes below in the clinic.
        await session.execute(text("SET LOCAL session_replication_role = replica"))
        await enter_tenant(session, a)
        raw = await session.scalar(
            text(f'SELECT count(*) FROM "{table}" WHERE tenant_id = :b'), {"b": b}
        )
        assert raw, "the database is filtering: this proves nothing"

        seen = {row.tenant_id for row in (await session.scalars(select(model))).all()}
        found = await session.scalar(
            select(func.count()).select_from(model).where(model.id == theirs_id)
        )
        touched = (
            await session.execute(
                update(model).values(updated_at=func.now()),
                execution_options={"synchronize_session": False},
            )
        ).rowcount
        by_id = (
            await session.execute(
                update(model).where(model.id == theirs_id).values(updated_at=func.now()),
                execution_options={"synchronize_session": False},
            )
        ).rowcount
        deleted = (
            await session.execute(
                delete(model).where(model.id == theirs_id),
                execution_options={"synchronize_session": False},
            )
        ).rowcount
        own_count = await session.scalar(select(func.count()).select_from(model))
        own = (
            await session.execute(
                update(model).where(model.id == ours_id).values(updated_at=func.now()),
                execution_options={"synchronize_session": False},
            )
        ).rowcount
        await transaction.rollback()

    assert seen == {a}
    assert found == 0
    assert touched == own_count, "a bulk UPDATE reached rows outside the clinic"
    assert by_id == 0, "an UPDATE by id reached another clinic's row"
    assert deleted == 0, "a DELETE by id reached another clinic's row"
    assert own == 1, "the same UPDATE of our own row: the probe proves nothing"
    assert await _rows(module_superuser_engine, table, b) == stored

    # A new row of B's, added in A's session: refused before any SQL is sent.
    copy = {**json.loads(stored[0]), "id": str(uuid.uuid4())}
    async with sessions() as session, session.begin() as transaction:
        await enter_tenant(session, a)
        stray = model(**_values(model, copy))
        stray.id, stray.tenant_id = uuid.UUID(copy["id"]), b
        session.add(stray)
        with pytest.raises(RuntimeError, match="another clinic"):
            await session.flush()
        await transaction.rollback()


# The service on a connection that bypasses row-level security: only its own filter is left.
# Each test on a copy of the furnished pair (``estates``), as test_tenant_routes' attacks run.
@pytest.fixture
async def unwalled_client(
    settings: Settings, database: Database
) -> AsyncIterator[httpx.AsyncClient]:
    unwalled = settings.model_copy(update={"database_url": SecretStr(database.superuser_url)})
    engine = create_async_engine(database.superuser_url)
    try:
        await _bypasses_rls(engine)
    finally:
        await engine.dispose()
    async with _running(unwalled) as application, asgi_client(application) as http:
        yield http


ATTACKS = [
    *(
        (route_attacks.test_another_clinics_resource_is_not_found_and_unchanged, r)
        for r in route_attacks.BY_ID
    ),
    *((route_attacks.test_reads_show_nothing_of_another_clinic, r) for r in route_attacks.READS),
]
"""test_tenant_routes' attacks by id and by read, each on every route it applies to."""


@pytest.mark.parametrize(
    ("attack", "route"),
    ATTACKS,
    ids=[f"{'read' if 'reads' in a.__name__ else 'by id'} {r.label}" for a, r in ATTACKS],
)
async def test_the_service_alone_keeps_another_clinic_out(
    unwalled_client, world, superuser_engine, estates, attack, route: Route
) -> None:
    await attack(unwalled_client, world, superuser_engine, estates, route)
