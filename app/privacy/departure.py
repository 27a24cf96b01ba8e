"""A clinic that left, deleted: its data keys, its rows, its files (issue 20, ADR 0037).

A clinic stops being a customer when its subscription ends (canceled or expired: at the end of
the last period paid for) or its trial ends with none begun (:func:`app.billing.access.
ended_at`); it is read-only from then, and its owner can still take everything away (ADR 0036).
``VETIFY_CLINIC_DELETION_DAYS`` later, ``vetify retention --apply`` deletes it, in the order
that leaves nothing readable at any point of a failure:

1. **Crypto-shred**: its data keys deleted, in a transaction of their own. From that commit on,
   every sealed value and file of the clinic's is unreadable, wherever a copy of it survives
   (a backup, a replica, a bucket's old versions).
2. **Rows**: every row of every table scoped to it, the trail's aside (kept for its own
   retention and pruned by age, ``vetify audit prune``: it names ids and fields, never values),
   and its name erased from its own row, which the trail references.
3. **Files**: every object under its id in storage.
4. **Done**: its billing account deleted and ``deleted_at`` set, once all of the above
   succeeded; until then each run starts again from step 1, each step finding less to do.

Without ``apply`` it only counts. A report says, per clinic, what went: keys, rows per table,
files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, Table, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.billing import access
from app.billing.models import BillingAccount, SubscriptionStatus
from app.clinics.models import Clinic
from app.db.base import Base
from app.keys.models import DataKey
from app.kit.clock import utcnow
from app.kit.storage import Storage
from app.privacy import retention

KEPT = frozenset({"audit_events", "audit_heads", "billing_accounts"})
"""Tables whose rows of the clinic's step 2 leaves: its trail, and the billing account that
says it left (deleted in step 4)."""
DELETED_NAME = "Deleted clinic"
CLINICS = (
    "SELECT c.id, b.status, b.stripe_subscription_id IS NOT NULL AS subscribed,"
    " b.trial_ends_at, b.current_period_end, b.synced_at FROM clinics c"
    " JOIN billing_accounts b ON b.tenant_id = c.id WHERE c.deleted_at IS NULL ORDER BY c.id"
)
"""The clinics not deleted yet, and what says whether they left, and when."""


@dataclass(frozen=True, slots=True)
class Departed:
    clinic_id: uuid.UUID
    ended_at: dt.datetime
    keys: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: int | None = None
    """Objects deleted from storage (None in a dry run: storage is not listed)."""

    def line(self, *, applied: bool) -> str:
        rows = ", ".join(f"{table} {count}" for table, count in self.rows.items() if count)
        done = "deleted" if applied else "would be deleted"
        files = "" if self.files is None else f"; {self.files} files"
        return (
            f"clinic {self.clinic_id} (left {self.ended_at.date().isoformat()}): {done}:"
            f" {self.keys} data keys shredded; {sum(self.rows.values())} rows"
            f" ({rows or 'none'}){files}"
        )


async def delete_departed(
    backup_url: str,
    owner_url: str,
    storage: Storage,
    now: dt.datetime,
    after: dt.timedelta,
    *,
    apply: bool,
) -> list[Departed]:
    """Every clinic that stopped being a customer longer than ``after`` ago, deleted (or, without
    ``apply``, counted)."""

    async def one(owner: AsyncEngine, row: Row[Any]) -> Departed | None:
        ended = access.ended_at(
            SubscriptionStatus(row.status),
            subscribed=row.subscribed,
            trial_ends_at=row.trial_ends_at,
            current_period_end=row.current_period_end,
            synced_at=row.synced_at,
        )
        if ended is None or ended + after > now:
            return None
        return await (_delete if apply else _count)(owner, storage, row.id, ended, now)

    return await retention.each_clinic(backup_url, owner_url, CLINICS, one)


def scoped_tables() -> list[Table]:
    """The tables step 2 empties of a clinic's rows, children before parents."""
    return [
        table
        for table in reversed(Base.metadata.sorted_tables)
        if "tenant_id" in table.c and table.name not in KEPT
    ]


async def _count(
    owner: AsyncEngine, storage: Storage, clinic_id: uuid.UUID, ended: dt.datetime, _: dt.datetime
) -> Departed:
    async with owner.connect() as connection:
        keys = await connection.scalar(
            select(func.count()).select_from(DataKey).where(DataKey.scope == str(clinic_id))
        )
        await _enter(connection, clinic_id)
        rows = {}
        for table in scoped_tables():
            rows[table.name] = int(
                await connection.scalar(
                    select(func.count()).select_from(table).where(table.c.tenant_id == clinic_id)
                )
                or 0
            )
        await connection.rollback()
    return Departed(clinic_id, ended, int(keys or 0), rows)


async def _delete(
    owner: AsyncEngine,
    storage: Storage,
    clinic_id: uuid.UUID,
    ended: dt.datetime,
    now: dt.datetime,
) -> Departed:
    async with owner.begin() as connection:  # 1: from this commit on, nothing of it opens
        shredded = await connection.execute(
            delete(DataKey).where(DataKey.scope == str(clinic_id)).returning(DataKey.version)
        )
        keys = len(shredded.all())
    async with owner.begin() as connection:  # 2
        await _enter(connection, clinic_id)
        rows = {}
        for table in scoped_tables():
            gone = await connection.execute(delete(table).where(table.c.tenant_id == clinic_id))
            rows[table.name] = gone.rowcount
        await connection.execute(
            update(Clinic)
            .where(Clinic.id == clinic_id)
            .values(name=DELETED_NAME, index_key_sealed=None, updated_at=utcnow())
        )
    files = await storage.delete_clinic(clinic_id)  # 3
    async with owner.begin() as connection:  # 4
        await _enter(connection, clinic_id)
        await connection.execute(
            delete(BillingAccount).where(BillingAccount.tenant_id == clinic_id)
        )
        await connection.execute(
            update(Clinic).where(Clinic.id == clinic_id).values(deleted_at=now)
        )
    return Departed(clinic_id, ended, keys, rows, files)


async def _enter(connection: AsyncConnection, clinic_id: uuid.UUID) -> None:
    """Row-level security holds the owner to one clinic too."""
    await connection.execute(
        text("SELECT set_config('app.tenant_id', :c, true)"), {"c": str(clinic_id)}
    )
