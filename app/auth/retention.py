"""What access leaves behind, removed once it is of no use (issue 20, retention): sessions and API
tokens expired or revoked, account links (address verification, password reset) used or
expired, and invitations accepted, withdrawn or expired, all before a cutoff
(``VETIFY_RETENTION_EXPIRED_DAYS`` ago, 30 days by default). Invitations and account links hold
the address they were mailed to: keeping them would keep personal data for nothing.

``vetify retention [--apply]``, an operator's cron job: it reads which clinics there are as the
backup role and removes as the schema's owner, a clinic at a time (row-level security holds the
owner to one clinic too) and a batch at a time, through the ORM, so that each row removed is a
``delete`` event of its clinic's audit trail like any other change (action ``job:retention``).
Without ``--apply`` it only counts.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.models import AccountToken, Credential, Invitation
from app.db.session import role_engine
from app.db.tenancy import enter_tenant
from app.kit import context

BATCH = 500
TASK = "retention"


@dataclass(frozen=True, slots=True)
class Purged:
    table: str
    rows: int
    clinics: int
    """How many clinics had some (0 for a table of no clinic's)."""

    def line(self, *, applied: bool) -> str:
        where = f" in {self.clinics} clinics" if self.clinics else ""
        return (
            f"{self.table}: {self.rows} rows{where} {'removed' if applied else 'would be removed'}"
        )


def _settled(cutoff: dt.datetime) -> dict[type[Credential] | type[Invitation], ColumnElement[bool]]:
    return {
        Credential: or_(Credential.expires_at < cutoff, Credential.revoked_at < cutoff),
        Invitation: or_(
            Invitation.expires_at < cutoff,
            Invitation.accepted_at < cutoff,
            Invitation.revoked_at < cutoff,
        ),
    }


async def purge(
    backup_url: str, owner_url: str, cutoff: dt.datetime, *, apply: bool
) -> list[Purged]:
    """What was (or, without ``apply``, would be) removed from before ``cutoff``, by table."""
    reader, owner = (role_engine(url) for url in (backup_url, owner_url))
    try:
        async with reader.connect() as connection:
            clinics = sorted(await connection.scalars(text("SELECT id FROM clinics")))
        sessions = async_sessionmaker(owner, expire_on_commit=False)
        found = []
        with context.bound(context.Context(task=TASK)):  # the trail's action: job:retention
            for model, settled in _settled(cutoff).items():
                counts = [
                    await _purge_clinic(sessions, clinic_id, model, settled, apply=apply)
                    for clinic_id in clinics
                ]
                found.append(Purged(model.__tablename__, sum(counts), sum(1 for n in counts if n)))
            found.append(await _purge_links(sessions, cutoff, apply=apply))
        return found
    finally:
        await reader.dispose()
        await owner.dispose()


async def _purge_clinic(
    sessions: async_sessionmaker[AsyncSession],
    clinic_id: uuid.UUID,
    model: type[Credential] | type[Invitation],
    settled: ColumnElement[bool],
    *,
    apply: bool,
) -> int:
    removed = 0
    while True:
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic_id)
            if not apply:
                count = await session.scalar(select(func.count()).select_from(model).where(settled))
                return int(count or 0)
            batch = (await session.scalars(select(model).where(settled).limit(BATCH))).all()
            for row in batch:
                await session.delete(row)  # a delete event of the clinic's trail, each
        removed += len(batch)
        if len(batch) < BATCH:
            return removed


async def _purge_links(
    sessions: async_sessionmaker[AsyncSession], cutoff: dt.datetime, *, apply: bool
) -> Purged:
    """Account links are no clinic's (a user's, before any clinic is chosen): one statement."""
    settled = or_(AccountToken.expires_at < cutoff, AccountToken.used_at < cutoff)
    async with sessions() as session, session.begin():
        if apply:
            removed = await session.execute(
                delete(AccountToken).where(settled).returning(AccountToken.id)
            )
            rows = len(removed.all())
        else:
            rows = int(
                await session.scalar(select(func.count()).select_from(AccountToken).where(settled))
                or 0
            )
    return Purged(AccountToken.__tablename__, rows, 0)
