"""Databases for tests: a migrated template per session, a clone per test or live server."""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import migrate, provision
from app.keys import rotation
from app.keys.service import PLATFORM
from app.kit import sealing
from tests.harness import canary
from tests.harness.services import PostgresServer


def engine(url: str) -> AsyncEngine:
    """An engine of the harness's own (a test's fixtures and checks): its statements'
    parameters never reach a log, as the service's do not (``hide_parameters``), so the
    records a test searches hold none of the rows it wrote itself."""
    return create_async_engine(url, hide_parameters=True)


OWNER_ROLE = "vetify_owner"
APP_ROLE = "vetify_app"
BACKUP_ROLE = "vetify_backup"
TEMPLATE = "vetify_template"


@dataclass(frozen=True)
class Database:
    name: str
    server: PostgresServer

    @property
    def app_url(self) -> str:
        """The service's role: row-level security applies."""
        return self.server.url(APP_ROLE, self.name)

    @property
    def owner_url(self) -> str:
        return self.server.url(OWNER_ROLE, self.name)

    @property
    def backup_url(self) -> str:
        """The backup role: reads every row (BYPASSRLS), writes none."""
        return self.server.url(BACKUP_ROLE, self.name)

    @property
    def superuser_url(self) -> str:
        """Sees every row: for checking what is really stored."""
        return self.server.url(database=self.name)


def prepare_template(server: PostgresServer) -> None:
    """Roles, and a template database migrated to head (synchronous: Alembic runs its own loop).
    The roles get the password the URLs carry, so a server that asks for them gets it."""
    roles = provision.Roles(OWNER_ROLE, APP_ROLE, BACKUP_ROLE)
    passwords = dict.fromkeys(roles.names, server.role_password)
    provision.provision_sync(server.url(), provision.Provisioning(TEMPLATE, roles, passwords))
    migrate.upgrade(server.url(OWNER_ROLE, TEMPLATE), APP_ROLE)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def row_locked(
    database: Database, table: str, row_id: uuid.UUID | str
) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """``table``'s row held ``FOR UPDATE`` by another connection until the block ends, so that
    the transactions a test starts queue behind it in the order it chooses. Yields
    ``waiting(n)``: returns once ``n`` lock requests wait (within 5 s, or fails)."""
    locker = await asyncpg.connect(_plain(database.superuser_url))
    try:
        async with locker.transaction():
            await locker.execute(f"SELECT FROM {table} WHERE id = $1 FOR UPDATE", row_id)
            yield functools.partial(_until_waiting, locker)
    finally:
        await locker.close()


async def lock_requests_waiting(database: Database, count: int) -> None:
    """Returns once ``count`` lock requests wait on ``database``'s server (within 5 s, or
    fails): a transaction a test started is queued behind a lock, not merely slow."""
    watcher = await asyncpg.connect(_plain(database.superuser_url))
    try:
        await _until_waiting(watcher, count)
    finally:
        await watcher.close()


async def _until_waiting(connection: asyncpg.Connection, count: int) -> None:
    started = time.monotonic()
    # pg_locks, not pg_stat_activity: that is read once per transaction.
    while await connection.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted") < count:
        assert time.monotonic() - started < 5, f"{count} lock requests never waited"
        await asyncio.sleep(0.02)


async def clone(
    server: PostgresServer, prefix: str = "test", template: str = TEMPLATE, *, name: str = ""
) -> Database:
    """A fresh database from the template (``CREATE DATABASE ... TEMPLATE``: tens of ms), or
    from another database of the server that nobody is connected to. Named ``prefix`` and a
    random part, or ``name`` (which replaces a database left under that name)."""
    return await _create(server, prefix, f'TEMPLATE "{template}"', name=name)


async def empty(server: PostgresServer, prefix: str = "empty") -> Database:
    """A database the owner role owns with no schema in it: what a first `vetify migrate` of
    a provisioned external database meets."""
    return await _create(server, prefix, "")


async def _create(server: PostgresServer, prefix: str, template: str, name: str = "") -> Database:
    admin = await asyncpg.connect(_plain(server.url()))
    try:
        if name:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        # FILE_COPY: a copy of the template's files and two checkpoints, which the test cluster
        # (fsync off) makes cheap; half the time of the default WAL_LOG, which writes every
        # block of the copy to the WAL (31 against 63 ms to create, 14 against 27 to drop).
        await admin.execute(
            f'CREATE DATABASE "{name}" {template} STRATEGY FILE_COPY OWNER "{OWNER_ROLE}"'
        )
    finally:
        await admin.close()
    return Database(name, server)


async def rename(database: Database, name: str) -> Database:
    """``database`` under ``name`` (replacing a database left under it): nobody may be connected
    to it."""
    admin = await asyncpg.connect(_plain(database.server.url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'ALTER DATABASE "{database.name}" RENAME TO "{name}"')
    finally:
        await admin.close()
    return Database(name, database.server)


class Spares:
    """Each template's next clone, made while a test runs and renamed for the test after it:
    ``CREATE DATABASE`` (a checkpoint and a copy of the files) cost each test 50 to 250 ms of
    its set-up on a busy machine, a rename costs a few. One spare per template at a time."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._making: dict[str, asyncio.Task[Database]] = {}

    async def take(self, template: str, name: str) -> Database:
        """A fresh clone of ``template`` under ``name``; the next one starts at once."""
        making = self._making.pop(template, None)
        if making is None:
            fresh = await clone(self.server, template=template, name=name)
        else:
            fresh = await rename(await making, name)
        self._making[template] = asyncio.create_task(
            clone(self.server, prefix="spare", template=template)
        )
        return fresh

    async def close(self) -> None:
        """Waits for the spares under way and drops them."""
        making, self._making = self._making, {}
        for task in making.values():
            await drop(await task)


async def drop(database: Database) -> None:
    admin = await asyncpg.connect(_plain(database.server.url()))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    finally:
        await admin.close()


async def names(server: PostgresServer) -> set[str]:
    """The databases on ``server``."""
    connection = await asyncpg.connect(_plain(server.url()))
    try:
        return {row[0] for row in await connection.fetch("SELECT datname FROM pg_database")}
    finally:
        await connection.close()


async def schema_heads(database: Database) -> set[str]:
    """The revisions ``database`` is at (none before its first migration)."""
    connection = await asyncpg.connect(_plain(database.superuser_url))
    try:
        if await connection.fetchval("SELECT to_regclass('alembic_version')") is None:
            return set()
        return {row[0] for row in await connection.fetch("SELECT version_num FROM alembic_version")}
    finally:
        await connection.close()


async def tables_holding(database: Database, needles: tuple[str, ...]) -> list[str]:
    """The tables of ``database`` with a row whose text holds any of ``needles`` (one
    statement, as the superuser: every schema but PostgreSQL's own, every row)."""
    connection = await asyncpg.connect(_plain(database.superuser_url))
    try:
        tables = await connection.fetch(
            "SELECT format('%I.%I', schemaname, tablename),"
            " quote_literal(format('%s.%s', schemaname, tablename)) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        if not tables:
            return []
        union = " UNION ALL ".join(
            f"(SELECT {name} FROM ONLY {table} t WHERE t::text LIKE ANY($1::text[]) LIMIT 1)"
            for table, name in tables
        )
        patterns = [f"%{needle}%" for needle in needles]
        found = [row[0] for row in await connection.fetch(union, patterns)]
        for table, texts in await sealed_texts(connection):
            if any(needle in text for needle in needles for text in texts):
                found.append(f"public.{table} (sealed)")
        return found
    finally:
        await connection.close()


async def sealed_texts(
    connection: asyncpg.Connection, *, since: int | None = None
) -> list[tuple[str, list[str]]]:
    """Every value sealed in the database (in each column ``app.keys.rotation.SEALED``
    declares; with ``since``, in the rows written by a transaction of that id or later), opened
    with the keys every app of the harness has: its table, and its texts (a JSON object's or
    list's string values, or the whole text). Sealed, a value is in no row's text: a search of
    what is stored must open these too. A value whose key is gone (shredded) or another
    keyring's is not there to find."""
    wrapper = canary.keyring()
    wrapped = {
        (row["scope"], row["version"]): (row["kek_id"], row["wrapped"])
        for row in await connection.fetch("SELECT scope, version, kek_id, wrapped FROM data_keys")
    }
    opened: dict[tuple[str, int], bytes | None] = {}
    found: list[tuple[str, list[str]]] = []
    for column in rotation.SEALED:
        scope_of = "NULL" if column.scoped_by is None else f"{column.scoped_by}::text"
        rows = await connection.fetch(
            f"SELECT id, {scope_of} AS scope, {column.column} AS sealed"
            f' FROM public."{column.table}" WHERE {column.column} IS NOT NULL'
            " AND ($1::bigint IS NULL OR xmin::text::bigint >= $1)",
            since,
        )
        for row in rows:
            scope = row["scope"] or PLATFORM
            version = sealing.version_of(row["sealed"])
            if (scope, version) not in opened:
                opened[scope, version] = _unwrapped(
                    wrapper, wrapped.get((scope, version)), scope, version
                )
            key = opened[scope, version]
            if key is None:
                continue
            aad = sealing.field_aad(scope, column.field, row["id"])
            try:
                plain = sealing.unseal(key, row["sealed"], aad).decode()
            except (sealing.Unreadable, UnicodeDecodeError):
                continue
            found.append((column.table, _texts(plain)))
    return found


def _unwrapped(
    wrapper: sealing.KeyWrapper, stored: tuple[str, bytes] | None, scope: str, version: int
) -> bytes | None:
    if stored is None:
        return None
    try:
        return wrapper.unwrap(*stored, sealing.key_context(scope, version))
    except sealing.Unreadable:
        return None


def _texts(plain: str) -> list[str]:
    try:
        value = json.loads(plain)
    except ValueError:
        return [plain]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, str)]
    if isinstance(value, list):  # a list of texts (a pet's alerts)
        return [v for v in value if isinstance(v, str)]
    return [plain]
