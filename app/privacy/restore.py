"""One clinic's rows brought back as they were at an earlier time, from a copy of the database
at that time, without rolling back any other clinic (issue 22, ADR 0041).

The copy is a point-in-time restore: the embedded database's own backups restored into a
scratch cluster (``vetify clinic restore --to TIME``), or any PostgreSQL restored to that time
by its provider (``--from URL``). The clinic's rows are copied from it into temporary tables of
one transaction of the database in use, and merged:

* a row the copy has and the database lacks (deleted since) is inserted, parents before
  children; one whose parent is not there (a member removed since, a parent refused) or which
  collides with a row written since (the same room booked at the same time) is refused, and
  named in the report;
* a row changed since is written back as it was (not with ``--missing-only``);
* a row written since and not in the copy stays: a merge undoes deletions and edits, and
  loses none of what the clinic did after the mistake.

Some rows are left exactly as the database holds them, whatever the copy says, because taking
them back would break a promise of the service's:

* who may come in: members, their credentials and invitations (a revoked token or a removed
  member would come back), and the billing account (Stripe's word);
* the audit trail (append-only, chained) and the clients' export requests;
* a client erased since (:mod:`app.privacy.service`): their row and their pets' appointments,
  whose notes the erasure cleared;
* a locked medical record and its parts (final; one absent now was removed by retention);
* an attachment whose file is no longer in storage (its row alone would be a broken link).

The restore is one transaction, under a lock on the clinic's row that holds off the clinic's
new rows meanwhile (each takes a key-share lock on it); the trail records it. Without
``apply`` the same transaction is rolled back: the report is what would happen, exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    MetaData,
    Row,
    Select,
    Table,
    Text,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    true,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import array, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.schema import CreateTable

from app.audit import trail
from app.db.base import TENANTS, Base
from app.db.session import role_engine
from app.keys.models import DataKey
from app.kit.storage import Storage

LEFT = frozenset(
    {
        "memberships",
        "credentials",
        "invitations",
        "billing_accounts",
        "audit_events",
        "audit_heads",
        "client_exports",
    }
)
"""The clinic's tables the restore leaves as they are (see the module's docstring); a test
holds every other table with a ``tenant_id`` to being restored."""
HeldRows = Callable[[Table, dict[str, Table]], ColumnElement[bool]]
"""Of the copy's rows of a table (its temporary table) and the other copies: the rows the
restore leaves as the database holds them."""


def _erased() -> Select[tuple[uuid.UUID]]:
    customers = Base.metadata.tables["customers"]
    return select(customers.c.id).where(customers.c.erased_at.is_not(None))


def _of_erased(then: Table, copies: dict[str, Table]) -> ColumnElement[bool]:
    """Appointments of a pet of an erased client's (the pet's owner now, or then)."""
    pets = [Base.metadata.tables["pets"], copies["pets"]]
    return then.c.pet_id.in_(
        union(*(select(pet.c.id).where(pet.c.customer_id.in_(_erased())) for pet in pets))
    )


def _locked(record_id: ColumnElement[uuid.UUID], copies: dict[str, Table]) -> ColumnElement[bool]:
    """Of a medical record locked now (or whose lock time, then, has passed)."""
    records = [Base.metadata.tables["medical_records"], copies["medical_records"]]
    return record_id.in_(
        union(*(select(record.c.id).where(record.c.locks_at <= func.now()) for record in records))
    )


def _none(then: Table, copies: dict[str, Table]) -> ColumnElement[bool]:
    return false()


GONE = Table(
    "restore_gone",
    MetaData(),
    Column("key", Text),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
"""The storage keys of the copy's attachments whose file storage no longer holds."""
HELD: dict[str, HeldRows] = {
    "customers": lambda then, _: then.c.id.in_(_erased()),
    "appointments": _of_erased,
    "medical_records": lambda then, copies: _locked(then.c.id, copies),
    "vaccinations": lambda then, copies: _locked(then.c.record_id, copies),
    "prescriptions": lambda then, copies: _locked(then.c.record_id, copies),
    "record_addenda": lambda then, copies: _locked(then.c.record_id, copies),
    "attachments": lambda then, copies: or_(
        _locked(then.c.record_id, copies), then.c.storage_key.in_(select(GONE.c.key))
    ),
}
"""Per table, the rows the restore leaves as they are (see the module's docstring)."""
BATCH = 1000
SHOWN = 20
"""Refused rows named per table in the report (all are counted)."""
WHO = {"action": "vetify clinic restore"}
"""The trail's actor: an operator's command."""


class RestoreRefused(Exception):
    """The restore cannot be done (nothing was changed); why, in a sentence."""


def restored_tables() -> list[Table]:
    """The tables restored, parents before children."""
    return [
        table
        for table in Base.metadata.sorted_tables
        if "tenant_id" in table.c and table.name not in LEFT
    ]


@dataclass
class Merged:
    """What the restore did (or would do) to one table."""

    table: str
    at_then: int = 0
    inserted: int = 0
    updated: int = 0
    held: int = 0
    refused: list[str] = field(default_factory=list)
    refused_count: int = 0
    newer: int = 0
    """Rows written since and kept."""

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows_then": self.at_then,
            "inserted": self.inserted,
            "updated": self.updated,
            "left_as_is": self.held,
            "refused": self.refused_count,
            "refused_ids": self.refused,
            "written_since_and_kept": self.newer,
        }


@dataclass
class Report:
    clinic_id: uuid.UUID
    source: str
    applied: bool
    tables: list[Merged]

    def as_json(self) -> dict[str, Any]:
        return {
            "clinic_id": str(self.clinic_id),
            "source": self.source,
            "applied": self.applied,
            "tables": [merged.as_json() for merged in self.tables],
        }

    def lines(self) -> Iterator[str]:
        verb = "restored" if self.applied else "would restore (a dry run: --apply restores)"
        yield f"clinic {self.clinic_id}: {verb} from {self.source}"
        yield (
            f"{'table':<18} {'then':>7} {'inserted':>9} {'updated':>8} {'as is':>6}"
            f" {'refused':>8} {'since':>7}"
        )
        for merged in self.tables:
            yield (
                f"{merged.table:<18} {merged.at_then:>7} {merged.inserted:>9}"
                f" {merged.updated:>8} {merged.held:>6} {merged.refused_count:>8}"
                f" {merged.newer:>7}"
            )
        for merged in self.tables:
            if merged.refused:
                more = merged.refused_count - len(merged.refused)
                tail = f" and {more} more" if more else ""
                yield f"refused in {merged.table}: {', '.join(merged.refused)}{tail}"


async def restore_clinic(
    owner_url: str,
    source_url: str,
    source: str,
    clinic_id: uuid.UUID,
    storage: Storage,
    *,
    missing_only: bool,
    apply: bool,
) -> Report:
    """Merge ``clinic_id``'s rows from the database at ``source_url`` (a copy at an earlier
    time, described by ``source`` in the report) into the one at ``owner_url``
    (as the schema's owner); committed only if ``apply``."""
    reader, owner = role_engine(source_url), role_engine(owner_url)
    try:
        async with reader.connect() as copy, owner.connect() as live:
            await copy.execute(text("SET TRANSACTION READ ONLY"))
            await _check(copy, live, clinic_id)
            metadata = MetaData()
            copies = {table.name: _copy_of(table, metadata) for table in restored_tables()}
            tables = [
                await _load(copy, live, table, copies[table.name], clinic_id)
                for table in restored_tables()
            ]
            await _files_gone(live, copies["attachments"], clinic_id, storage)
            notes = []
            for merged, table in zip(tables, restored_tables(), strict=True):
                notes += await _merge(
                    live, clinic_id, table, copies, merged, missing_only=missing_only
                )
            report = Report(clinic_id, source, apply, tables)
            if apply:
                await _audited(live, clinic_id, notes)
                await live.commit()
            else:
                await live.rollback()
            return report
    finally:
        await reader.dispose()
        await owner.dispose()


async def _check(copy: AsyncConnection, live: AsyncConnection, clinic_id: uuid.UUID) -> None:
    """The clinic locked in the database; refused if it was deleted, if the copy does not hold
    it, if their schemas differ, or if a data key that sealed the copy's values is gone."""
    for connection in (copy, live):
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :c, true)"), {"c": str(clinic_id)}
        )
    now = (
        await live.execute(
            text("SELECT deleted_at FROM clinics WHERE id = :c FOR UPDATE"), {"c": clinic_id}
        )
    ).first()
    if now is None or now.deleted_at is not None:
        raise RestoreRefused(f"clinic {clinic_id} is not in the database (or was deleted)")
    if (
        await copy.scalar(text("SELECT count(*) FROM clinics WHERE id = :c"), {"c": clinic_id})
    ) == 0:
        raise RestoreRefused(f"clinic {clinic_id} is not in the copy: it did not exist yet")
    schemas = [
        sorted(await connection.scalars(text("SELECT version_num FROM alembic_version")))
        for connection in (copy, live)
    ]
    if schemas[0] != schemas[1]:
        raise RestoreRefused(
            f"the copy's schema is at {schemas[0]}, the database's at {schemas[1]}: migrate the"
            " copy to the same revision first (vetify migrate against it)"
        )
    versions = select(DataKey.version).where(DataKey.scope == str(clinic_id))
    then, kept = [set(await connection.scalars(versions)) for connection in (copy, live)]
    if not then <= kept:
        raise RestoreRefused(
            f"the clinic's data keys {sorted(then - kept)}, which sealed the copy's values, were"
            " deleted since (retired by `vetify keys rotate-dek --retire`, or shredded): the"
            " copy's values cannot be opened here"
        )


def _copy_of(table: Table, metadata: MetaData) -> Table:
    """The temporary table that holds the copy's rows of ``table`` for the transaction."""
    return Table(
        f"restore_{table.name}",
        metadata,
        *(Column(column.name, column.type) for column in table.c),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )


async def _load(
    copy: AsyncConnection, live: AsyncConnection, table: Table, then: Table, clinic_id: uuid.UUID
) -> Merged:
    """The copy's rows of ``table`` for the clinic, into ``then``."""
    await live.execute(CreateTable(then))
    raw: Any = (await live.get_raw_connection()).driver_connection  # asyncpg's, checked out
    merged = Merged(table.name)
    rows = await copy.stream(select(table).where(table.c.tenant_id == clinic_id))
    async for batch in rows.partitions(BATCH):
        await raw.copy_records_to_table(
            then.name, records=[tuple(row) for row in batch], columns=list(then.c.keys())
        )
        merged.at_then += len(batch)
    return merged


async def _files_gone(
    live: AsyncConnection, attachments: Table, clinic_id: uuid.UUID, storage: Storage
) -> None:
    await live.execute(CreateTable(GONE))
    stored = await storage.keys_of(clinic_id)
    named = await live.scalars(select(attachments.c.storage_key))
    gone = [{"key": key} for key in named if key not in stored]
    if gone:
        await live.execute(GONE.insert(), gone)


async def _merge(
    live: AsyncConnection,
    clinic_id: uuid.UUID,
    table: Table,
    copies: dict[str, Table],
    merged: Merged,
    *,
    missing_only: bool,
) -> list[trail.Note]:
    """Merge the copy's rows of ``table`` (see the module); an audit note per row changed."""
    then = copies[table.name]
    keys = [column.name for column in table.primary_key]
    key = keys[0]
    same = and_(*(table.c[name] == then.c[name] for name in keys))
    absent = ~exists().where(same)
    held = HELD.get(table.name, _none)(then, copies)
    whole = _parents_present(table, then)
    columns = list(table.c.keys())
    noted = [name for name in columns if name not in trail.UNWRITTEN]
    merged.held = int(await live.scalar(select(func.count()).select_from(then).where(held)) or 0)
    inserted = await live.execute(
        insert(table)
        .from_select(columns, select(*then.c).where(absent, ~held, whole))
        .on_conflict_do_nothing()  # any constraint: a room booked twice is refused, not an error
        .returning(table.c[key], _names({name: table.c[name].is_not(None) for name in noted}))
    )
    notes = [_note(merged, clinic_id, row, "insert") for row in inserted]
    refused = select(then.c[key]).where(absent, ~held)
    merged.refused_count = int(
        await live.scalar(select(func.count()).select_from(refused.subquery())) or 0
    )
    merged.refused = [
        str(value) for value in await live.scalars(refused.order_by(then.c[key]).limit(SHOWN))
    ]
    if not missing_only:
        changed = [name for name in columns if name not in keys]
        differs = {name: table.c[name].is_distinct_from(then.c[name]) for name in changed}
        # The columns that differ, worked out before the update (a CTE reads the rows as they
        # were): the trail names them, as it does an edit's.
        before = (
            select(
                then.c[key].label("key"),
                _names({name: differs[name] for name in noted if name in differs}).label("fields"),
            )
            .select_from(then.join(table, same))
            .where(or_(*differs.values()), ~held, whole)
            .cte("changed")
        )
        updated = await live.execute(
            update(table)
            .values({table.c[name]: then.c[name] for name in changed})
            .where(same, before.c.key == then.c[key])
            .returning(table.c[key], before.c.fields)
        )
        notes += [_note(merged, clinic_id, row, "update") for row in updated]
    merged.newer = int(
        await live.scalar(
            select(func.count()).select_from(table).where(table.c.tenant_id == clinic_id, absent)
        )
        or 0
    )
    return notes


def _names(conditions: dict[str, ColumnElement[bool]]) -> ColumnElement[list[str]]:
    """The names whose condition holds, as an array."""
    listed = array([case((condition, literal(name))) for name, condition in conditions.items()])
    return func.array_remove(listed, null(), type_=ARRAY(Text))


def _note(
    merged: Merged,
    clinic_id: uuid.UUID,
    row: Row[uuid.UUID, list[str]],
    change: trail.Change,
) -> trail.Note:
    if change == "insert":
        merged.inserted += 1
    else:
        merged.updated += 1
    key, fields = row[0], row[1]
    return trail.Note(clinic_id, merged.table, key, change, tuple(sorted(fields)), WHO)


def _parents_present(table: Table, then: Table) -> ColumnElement[bool]:
    """True of a row of the copy whose every parent is in the database (a foreign key with a
    null column holds, as PostgreSQL's MATCH SIMPLE has it)."""
    present = []
    for key in table.foreign_key_constraints:
        parent = key.referred_table
        if parent.name == TENANTS:
            continue
        pairs = [
            (then.c[element.parent.name], parent.c[element.column.name]) for element in key.elements
        ]
        present.append(
            or_(
                *(mine.is_(None) for mine, _ in pairs),
                exists().where(*(theirs == mine for mine, theirs in pairs)),
            )
        )
    return and_(true(), *present)


async def _audited(live: AsyncConnection, clinic_id: uuid.UUID, notes: list[trail.Note]) -> None:
    """An event per row the restore inserted or changed, in the clinic's trail, as the ORM's
    changes are (the columns written; the action: ``vetify clinic restore``)."""
    if notes:
        async with AsyncSession(bind=live) as session:
            await session.run_sync(trail.append, clinic_id, notes)
