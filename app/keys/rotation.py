"""A scope's data key replaced (``vetify keys rotate-dek``, ADR 0028): a new version is made, new
values are sealed with it, and every value sealed with an older one is sealed again with it, a
batch at a time, while the service goes on serving.

* **Online**: each batch is its own short transaction, and a value is replaced only if it is
  still the one read (a write in between wins, and already carries the new version or is read
  again by the next pass). Readers open either version meanwhile.
* **Resumable**: what is left is what still names an older version (the version is in each
  value's header, in the clear), so an interrupted run is simply run again; it makes no second
  new key while the newest one is not yet in use everywhere.
* **Processes**: each process reads a scope's current version again every
  :data:`app.keys.service.CURRENT_FOR_SECONDS`, so a value a running process seals with the old
  version after the new one was made is caught by a later pass (``--retire`` checks first).
* **Retiring**: ``--retire`` deletes a scope's older versions once no value names them and the
  new key is older than twice that minute (by the database's clock): until then a process may
  still seal with an older one, which would be lost with it (how crypto-shredding works, on
  purpose). Too soon, it says so and keeps them.

Files in storage sealed with a clinic's key (attachments, exports) are sealed again the same
way, one file per transaction with its row locked (so it is not deleted half-way), written in
place (readers get the old bytes or the new, whole: a rename locally, one object on S3), then
the row's ``sealed_with`` moved. A file stored in the clear before files were sealed (an
attachment with no ``sealed_with``) is sealed by the same pass. A file a download holds is come
back to (waited for a few seconds at most); one missing from storage, or held longer, is passed
over and counted as left.

Where sealed values and files live is declared by the domains that seal them (:data:`SEALED`,
:data:`SEALED_FILES`), so this module knows no table of its own.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnClause,
    ColumnElement,
    LargeBinary,
    String,
    TableClause,
    Uuid,
    column,
    delete,
    exists,
    func,
    select,
    table,
)
from sqlalchemy import text as sql_text
from sqlalchemy import update as sql_update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.session import role_engine
from app.keys import service
from app.keys.models import DataKey
from app.keys.service import PLATFORM
from app.kit import sealing
from app.kit.sealing import KeyWrapper
from app.kit.storage import ObjectMissing, Storage, discard, staging_file

log = logging.getLogger("vetify.keys")

BATCH = 500


def settled_after() -> float:
    """How old the new key must be before older ones may go: twice the time a process keeps a
    scope's current version before reading it again."""
    return 2 * service.CURRENT_FOR_SECONDS


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column of sealed values: ``table.column`` (named ``*_sealed``), bound to ``field``
    (what its AAD names), in the scope ``platform`` (``scoped_by`` None) or of the clinic in
    column ``scoped_by`` (``id`` in the clinics' own table)."""

    table: str
    column: str
    field: str
    scoped_by: str | None = None


SEALED: list[SealedColumn] = []
"""Every column that holds sealed values; each domain adds its own as it is imported."""


def seals(column: SealedColumn) -> None:
    """Declare ``column`` (once, as its module is imported)."""
    SEALED.append(column)


@dataclass(frozen=True, slots=True)
class SealedFiles:
    """Files in storage sealed with their clinic's key (:func:`app.keys.service.seal_file`),
    bound to ``what`` and the row's id: each row of ``table`` (scoped by ``tenant_id``) names
    its file (``storage_key``) and the version it was sealed with (``sealed_with``), where
    ``stored`` (SQL) says it has one. ``sealed_with`` null: a file stored before its version
    was kept, in the clear if ``clear_before`` (else sealed, its version in its header)."""

    table: str
    what: str
    stored: str
    clear_before: bool


SEALED_FILES: list[SealedFiles] = []
"""Every table whose rows name sealed files; each domain adds its own as it is imported."""


def seals_files(files: SealedFiles) -> None:
    """Declare ``files`` (once, as its module is imported)."""
    SEALED_FILES.append(files)


@dataclass(frozen=True, slots=True)
class Rotated:
    scope: str
    version: int
    """The scope's current version once the run is over."""
    resealed: int
    """Values sealed again."""
    left: int
    """Values and files still naming an older version (sealed meanwhile by a process that had
    not yet read the new version: run again), or files missing from storage (see the log)."""
    retired: list[int]
    files: int = 0
    """Files in storage sealed again (or sealed for the first time, stored before files were)."""
    too_soon: bool = False
    """Asked to retire, but the new key is younger than :func:`settled_after`: a process may
    still seal with an older one. Retire later."""


def _version_of(sealed: ColumnElement[bytes]) -> ColumnElement[int]:
    """The data key version in a sealed value's header (SQL): after a format byte, 4 bytes,
    big-endian (app/kit/sealing.py)."""
    total: ColumnElement[int] = func.get_byte(sealed, 1).cast(BigInteger)
    for offset in (2, 3, 4):
        total = total * 256 + func.get_byte(sealed, offset)
    return total


async def rotate_dek(
    owner_url: str, wrapper: KeyWrapper, storage: Storage, scope: str, *, retire: bool = False
) -> Rotated:
    """Seal everything ``scope`` holds (values, and files in ``storage``) with a new data key
    (or the newest one, if an earlier run made it and did not finish), as the schema's owner;
    then, if ``retire``, delete the older keys when nothing names them."""
    engine = role_engine(owner_url)
    try:
        async with engine.connect() as connection:
            undeclared = await _undeclared(connection)
        if undeclared:
            # Rotating around them, then retiring, would shred them.
            raise RuntimeError(f"sealed columns no domain declared: {', '.join(undeclared)}")
        version = await _newest(engine, wrapper, scope)
        keys = _Keys(wrapper, scope, version)
        resealed = 0
        for column in SEALED:
            while True:
                async with engine.begin() as connection:
                    done = await _reseal(connection, keys, column)
                resealed += done
                if done < BATCH:
                    break
        files = 0
        for declared in SEALED_FILES:
            files += await _reseal_files(engine, storage, keys, declared)
        async with engine.begin() as connection:
            left = await _left(connection, scope, version)
            settled = not left and await _old_enough(connection, scope, version)
            retired = await _retire(connection, scope, version) if retire and settled else []
        too_soon = retire and not left and not settled
        return Rotated(scope, version, resealed, left, retired, files, too_soon)
    finally:
        await engine.dispose()


async def _undeclared(connection: AsyncConnection) -> list[str]:
    """The columns named ``*_sealed`` (how every sealed column is named) that :data:`SEALED`
    does not list, and the tables naming sealed files (by ``sealed_with``) that
    :data:`SEALED_FILES` does not: the declarations are made as domains are imported, and one
    missed must stop the run rather than leave its values on a key about to be retired."""
    found = await connection.execute(
        sql_text(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'"
            " AND (column_name LIKE '%\\_sealed' OR column_name = 'sealed_with')"
        )
    )
    declared = {(column.table, column.column) for column in SEALED}
    declared |= {(files.table, "sealed_with") for files in SEALED_FILES}
    return sorted(f"{t}.{c}" for t, c in found if (t, c) not in declared)


async def _newest(engine: AsyncEngine, wrapper: KeyWrapper, scope: str) -> int:
    """The version to seal with: a new one, unless the newest is not yet in use by every value
    (an earlier run stopped half-way: it goes on with that one)."""
    async with engine.begin() as connection:
        newest = await connection.scalar(
            select(func.max(DataKey.version)).where(DataKey.scope == scope)
        )
        if newest is not None:
            behind = await _left(connection, scope, newest)
            if behind and await _versions(connection, scope) > 1:
                return int(newest)
        version = (newest or 0) + 1
        key = sealing.new_data_key()
        kek_id, wrapped = await asyncio.to_thread(
            wrapper.wrap, key, sealing.key_context(scope, version)
        )
        await connection.execute(
            insert(DataKey).values(scope=scope, version=version, kek_id=kek_id, wrapped=wrapped)
        )
        return version


async def _old_enough(connection: AsyncConnection, scope: str, version: int) -> bool:
    """Whether every process seals with ``version`` by now (they read a scope's current
    version again every ``CURRENT_FOR_SECONDS``), by the database's clock."""
    return bool(
        await connection.scalar(
            sql_text(
                "SELECT created_at < now() - make_interval(secs => :wait) FROM data_keys"
                " WHERE scope = :scope AND version = :version"
            ),
            {"wait": settled_after(), "scope": scope, "version": version},
        )
    )


async def _retire(connection: AsyncConnection, scope: str, version: int) -> list[int]:
    """Delete ``scope``'s keys older than ``version`` (nothing names them any more)."""
    gone = await connection.execute(
        delete(DataKey)
        .where(DataKey.scope == scope, DataKey.version < version)
        .returning(DataKey.version)
    )
    return sorted(gone.scalars())


async def _versions(connection: AsyncConnection, scope: str) -> int:
    found = await connection.scalar(
        select(func.count()).select_from(DataKey).where(DataKey.scope == scope)
    )
    return int(found or 0)


def _rows(sealed: SealedColumn) -> TableClause:
    typed: list[ColumnClause[Any]] = [column("id", Uuid()), column(sealed.column, LargeBinary())]
    if sealed.scoped_by not in (None, "id"):  # "id": a clinic's own row
        typed.append(column(sealed.scoped_by, Uuid()))
    return table(sealed.table, *typed)


def _behind(
    sealed: SealedColumn, rows: TableClause, scope: str, version: int
) -> ColumnElement[bool] | None:
    """Which of ``sealed``'s values (``rows``) in ``scope`` name a version older than
    ``version``; None if the column is never in ``scope``."""
    if (sealed.scoped_by is None) != (scope == PLATFORM):
        return None
    value = rows.c[sealed.column]
    behind = value.is_not(None) & (_version_of(value) < version)
    if sealed.scoped_by is None:
        return behind
    return behind & (rows.c[sealed.scoped_by] == uuid.UUID(scope))


async def _left(connection: AsyncConnection, scope: str, version: int) -> int:
    """How many values and files of ``scope`` name a version older than ``version``."""
    left = 0
    for sealed in SEALED:
        left += await _older(connection, sealed, scope, version)
    for files in SEALED_FILES:
        entered = await _files_entered(connection, files, scope, version)
        if entered is not None:
            rows, behind = entered
            found = await connection.scalar(select(func.count()).select_from(rows).where(behind))
            left += int(found or 0)
    return left


async def _older(
    connection: AsyncConnection, sealed: SealedColumn, scope: str, version: int
) -> int:
    entered = await _entered(connection, sealed, scope, version)
    if entered is None:
        return 0
    rows, behind = entered
    found = await connection.scalar(select(func.count()).select_from(rows).where(behind))
    return int(found or 0)


async def _entered(
    connection: AsyncConnection, sealed: SealedColumn, scope: str, version: int
) -> tuple[TableClause, ColumnElement[bool]] | None:
    """``sealed``'s rows and which of them are behind ``version`` in ``scope``, the
    transaction entered in the scope's clinic; None if the column is never in ``scope``."""
    rows = _rows(sealed)
    behind = _behind(sealed, rows, scope, version)
    if behind is None:
        return None
    if sealed.scoped_by is not None:
        await _enter(connection, scope)
    return rows, behind


async def _enter(connection: AsyncConnection, scope: str) -> None:
    """The transaction entered in the clinic ``scope``: row-level security holds the owner to
    one clinic too."""
    await connection.execute(
        sql_text("SELECT set_config('app.tenant_id', :scope, true)"), {"scope": scope}
    )


@dataclass
class _Keys:
    """What a run seals again with: ``scope``'s data key ``version``; and each of the scope's
    keys it opens on the way (unwrapped once a run, kept until it ends)."""

    wrapper: KeyWrapper
    scope: str
    version: int
    opened: dict[int, bytes] = field(default_factory=dict)

    async def of(self, connection: AsyncConnection, version: int) -> bytes:
        if version not in self.opened:
            row = (
                await connection.execute(
                    select(DataKey.kek_id, DataKey.wrapped).where(
                        DataKey.scope == self.scope, DataKey.version == version
                    )
                )
            ).one_or_none()
            if row is None:
                raise sealing.Unreadable(
                    f"no data key {version} for scope {self.scope} (shredded?)"
                )
            self.opened[version] = await asyncio.to_thread(
                self.wrapper.unwrap,
                row.kek_id,
                row.wrapped,
                sealing.key_context(self.scope, version),
            )
        return self.opened[version]


async def _reseal(connection: AsyncConnection, keys: _Keys, column: SealedColumn) -> int:
    """One batch of ``column``'s values on older versions, sealed again with the run's key."""
    scope, version = keys.scope, keys.version
    entered = await _entered(connection, column, scope, version)
    if entered is None:
        return 0
    rows, behind = entered
    value = rows.c[column.column]
    found = (
        await connection.execute(
            select(rows.c.id, value)
            .where(behind)
            .order_by(rows.c.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for row_id, sealed in found:
        aad = sealing.field_aad(scope, column.field, row_id)
        old = sealing.version_of(sealed)
        plain = sealing.unseal(await keys.of(connection, old), sealed, aad)
        fresh = sealing.seal(await keys.of(connection, version), version, plain, aad)
        # Only if it is still the value read: a write in between wins.
        await connection.execute(
            sql_update(rows)
            .where(rows.c.id == row_id, value == sealed)
            .values({column.column: fresh})
        )
    return len(found)


def _file_rows(files: SealedFiles) -> TableClause:
    return table(
        files.table,
        column("id", Uuid()),
        column("tenant_id", Uuid()),
        column("storage_key", String()),
        column("sealed_with", BigInteger()),
    )


async def _files_entered(
    connection: AsyncConnection, files: SealedFiles, scope: str, version: int
) -> tuple[TableClause, ColumnElement[bool]] | None:
    """``files``' rows and which of them name a file behind ``version`` (or in the clear), the
    transaction entered in the scope's clinic; None for the platform's scope (no files)."""
    if scope == PLATFORM:
        return None
    rows = _file_rows(files)
    await _enter(connection, scope)
    sealed_with = rows.c.sealed_with
    behind = (
        (rows.c.tenant_id == uuid.UUID(scope))
        & rows.c.storage_key.is_not(None)
        & sql_text(files.stored)
        & (sealed_with.is_(None) | (sealed_with < version))
    )
    return rows, behind


LOCKED_WAITS = 50
LOCKED_WAIT_SECONDS = 0.1
"""How long a pass waits, at most, for files a download holds (``FOR SHARE``) before it leaves
them for the count: about five seconds, in tenths."""


async def _reseal_files(
    engine: AsyncEngine, storage: Storage, keys: _Keys, files: SealedFiles
) -> int:
    """``files``' files behind the run's version sealed again with it, one per transaction with its
    row locked; returns how many. A file a download holds is passed over and come back to (the
    pass starts again from the first once it reaches the last, and waits a moment when all that
    is left is held); one still held after :data:`LOCKED_WAITS`, or missing from storage, is
    left for the count."""
    done, after, waits = 0, None, 0
    missing: set[uuid.UUID] = set()
    while True:
        async with engine.begin() as connection:
            entered = await _files_entered(connection, files, keys.scope, keys.version)
            if entered is None:
                return 0
            rows, behind = entered
            if missing:
                behind = behind & rows.c.id.not_in(missing)
            row = (
                await connection.execute(
                    select(rows.c.id, rows.c.storage_key, rows.c.sealed_with)
                    .where(behind if after is None else behind & (rows.c.id > after))
                    .order_by(rows.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).one_or_none()
            if row is None:
                if after is not None:  # once more from the first: those held on the way
                    after = None
                    continue
                held = await connection.scalar(select(exists().where(behind)))
                if not held or waits >= LOCKED_WAITS:
                    return done
                waits += 1
                await asyncio.sleep(LOCKED_WAIT_SECONDS)
                continue
            after = row.id
            try:
                await _reseal_file(connection, storage, keys, files, row)
            except ObjectMissing:
                log.error("%s %s: no file %s in storage to seal again", files.table, *row[:2])
                missing.add(row.id)
                continue
            await connection.execute(
                sql_update(rows).where(rows.c.id == row.id).values(sealed_with=keys.version)
            )
            done += 1


async def _reseal_file(
    connection: AsyncConnection, storage: Storage, keys: _Keys, files: SealedFiles, row: Any
) -> None:
    aad = sealing.file_aad(keys.scope, files.what, row.id)
    stored, plain, fresh = [await asyncio.to_thread(staging_file, storage) for _ in range(3)]
    try:
        await storage.get(row.storage_key, stored)
        if row.sealed_with is not None or not files.clear_before:
            old = await asyncio.to_thread(sealing.file_version, stored)
            old_key = await keys.of(connection, old)
            await asyncio.to_thread(sealing.open_file, old_key, stored, plain, aad)
        else:  # stored in the clear, before files were sealed
            await asyncio.to_thread(stored.replace, plain)
        new_key = await keys.of(connection, keys.version)
        await asyncio.to_thread(sealing.seal_file, new_key, keys.version, plain, fresh, aad)
        await storage.put(row.storage_key, fresh)
    finally:
        for path in (stored, plain, fresh):
            await discard(path)
