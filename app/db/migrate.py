"""Schema management: run Alembic, one migration of a database at a time, and report
whether we are at head.

Migrations run as the *owner* role, which owns the schema; the *service* role the API
connects as owns nothing, is not a superuser and cannot bypass row-level security (ADR
0002). Migrations grant the service role exactly the privileges each table needs. The roles
and the database are made by :mod:`app.db.provision` (ADR 0015).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Connection, Row, TableClause, select, text
from sqlalchemy.engine import URL, make_url

from app.kit import sealing
from app.kit.sealing import KeyWrapper, key_context, new_data_key

APP_ROLE_ATTRIBUTE = "app_role"
KEYS_ATTRIBUTE = "keys"
"""The key-encryption keys (app.kit.sealing.KeyWrapper) for migrations that seal or open
fields (0012)."""
MIGRATION_LOCK = int.from_bytes(b"vetify:m", "big") >> 1
"""The advisory lock key migrations of a database take (any bigint nothing else uses)."""


class MigrationsMissing(RuntimeError):
    """The ``migrations`` package is not importable (a broken install)."""


def migrations_dir() -> Path:
    spec = importlib.util.find_spec("migrations")
    if spec is None or not spec.submodule_search_locations:
        raise MigrationsMissing("the migrations package is missing")
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(
    owner_url: str | None = None, app_role: str | None = None, keys: KeyWrapper | None = None
) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = owner_url
    config.attributes[APP_ROLE_ATTRIBUTE] = app_role
    config.attributes[KEYS_ATTRIBUTE] = keys
    return config


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migrations' heads: read from the scripts once per process (they ship with it)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def upgrade(
    owner_url: str, app_role: str, revision: str = "head", keys: KeyWrapper | None = None
) -> None:
    """Run from synchronous code only (Alembic's env starts its own event loop). ``keys``:
    what a migration sealing existing values wraps their data keys with."""
    command.upgrade(alembic_config(owner_url, app_role, keys), revision)


def lock_migrations(connection: Connection) -> None:
    """Wait until no other migration of this database is under way, and keep others waiting
    until ``connection`` closes (a session lock: a migration that commits part-way, in an
    autocommit block, stays covered). `serve`, `worker` and `migrate` all migrate at start,
    so replicas started together meet here; the later one then finds the schema at head."""
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
    connection.commit()


def check(owner_url: str) -> None:
    """Fail if the models describe a schema the migrations do not make."""
    command.check(alembic_config(owner_url, "unused"))


def role_of(url: str) -> str:
    username = make_url(url).username
    if not username:
        raise ValueError("the database URL must name its role")
    return username


def plain_url(url: str | URL) -> str:
    """The URL as libpq (and asyncpg, psycopg) read it: no SQLAlchemy driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def identifier(name: str) -> str:
    """A role or database name, quoted; refused unless it is a plain lower-case identifier."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f'"{name}"'


def migration_keys(what: str) -> KeyWrapper:
    """The key-encryption keys the running migration was given (``vetify migrate`` passes the
    settings'), for sealing or opening ``what``; refused, naming the way to give them, when
    there are none."""
    config = op.get_context().config  # None only outside Alembic's commands
    wrapper = None if config is None else config.attributes.get(KEYS_ATTRIBUTE)
    if wrapper is None:
        raise RuntimeError(
            f"{what} to seal or open: run this migration with `vetify migrate`, which passes"
            " the keys of VETIFY_ENCRYPTION_KEYS (or VETIFY_KMS_KEY_ID)"
        )
    return cast(KeyWrapper, wrapper)


def unwrapped_data_key(
    connection: Connection, wrapper: KeyWrapper, scope: str, version: int
) -> bytes:
    """Version ``version`` of ``scope``'s data key, unwrapped (for a migration)."""
    row = connection.execute(
        text("SELECT kek_id, wrapped FROM data_keys WHERE scope = :scope AND version = :v"),
        {"scope": scope, "v": version},
    ).one()
    return wrapper.unwrap(row.kek_id, row.wrapped, key_context(scope, version))


class FieldKeys:
    """Fields sealed and opened by a migration (``what`` names them if no keys were given), each
    clinic's data key unwrapped once: sealing with its newest (made if it has none yet), opening
    with the version a value names."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._newest: dict[str, tuple[int, bytes]] = {}
        self._opened: dict[tuple[str, int], bytes] = {}

    def seal(self, scope: str, field: str, row_id: uuid.UUID, plain: bytes) -> bytes:
        if scope not in self._newest:
            wrapper = migration_keys(self.what)
            self._newest[scope] = newest_data_key(op.get_bind(), wrapper, scope)
        version, key = self._newest[scope]
        return sealing.seal(key, version, plain, sealing.field_aad(scope, field, row_id))

    def open(self, scope: str, field: str, row_id: uuid.UUID, sealed: bytes) -> bytes:
        version = sealing.version_of(sealed)
        if (scope, version) not in self._opened:
            wrapper = migration_keys(self.what)
            key = unwrapped_data_key(op.get_bind(), wrapper, scope, version)
            self._opened[scope, version] = key
        key = self._opened[scope, version]
        return sealing.unseal(key, sealed, sealing.field_aad(scope, field, row_id))


def newest_data_key(connection: Connection, wrapper: KeyWrapper, scope: str) -> tuple[int, bytes]:
    """``scope``'s newest data key (its version, and the key unwrapped), or its first one, made
    and stored now (for a migration that seals)."""
    newest = connection.scalar(
        text("SELECT max(version) FROM data_keys WHERE scope = :scope"), {"scope": scope}
    )
    if newest is not None:
        return int(newest), unwrapped_data_key(connection, wrapper, scope, int(newest))
    key = new_data_key()
    kek_id, wrapped = wrapper.wrap(key, key_context(scope, 1))
    connection.execute(
        text(
            "INSERT INTO data_keys (scope, version, kek_id, wrapped)"
            " VALUES (:scope, 1, :kek_id, :wrapped)"
        ),
        {"scope": scope, "kek_id": kek_id, "wrapped": wrapped},
    )
    return 1, key


@contextmanager
def rls_released(*tables: str) -> Iterator[None]:
    """Row-level security not forced on the owner for ``tables`` until the end of the block,
    for a migration that rewrites every clinic's rows (the ALTERs hold their tables' locks until
    its transaction ends: nobody else sees them released)."""
    for table in tables:
        op.execute(f"ALTER TABLE {identifier(table)} NO FORCE ROW LEVEL SECURITY")
    yield
    for table in tables:
        op.execute(f"ALTER TABLE {identifier(table)} FORCE ROW LEVEL SECURITY")


def rows_in_batches(
    table: TableClause, columns: Sequence[str], condition: ColumnElement[bool], batch: int = 1000
) -> Iterator[Row[Any]]:
    """``table``'s rows meeting ``condition`` (their id and ``columns``), read a batch at a time
    in id order, for a migration."""
    after = uuid.UUID(int=0)
    while True:
        found = (
            op.get_bind()
            .execute(
                select(table.c.id, *(table.c[c] for c in columns))
                .where(table.c.id > after, condition)
                .order_by(table.c.id)
                .limit(batch)
            )
            .all()
        )
        yield from found
        if len(found) < batch:
            return
        after = found[-1].id
