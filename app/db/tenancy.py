"""Tenancy, application wall: every ORM statement is scoped to the session's clinic.

The clinic is set once per transaction with :func:`enter_tenant`, which also sets
``app.tenant_id`` for row-level security (the database wall). From then on every SELECT,
UPDATE and DELETE on a :class:`~app.db.base.TenantScoped` entity gets
``tenant_id = <clinic>`` added, and every new row gets the clinic stamped on it, so no route
or service has to remember a filter. A session with no clinic sees nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event, false, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, with_loader_criteria

from app.db.base import TenantScoped

TENANT_KEY = "vetify_tenant_id"
USER_KEY = "vetify_user_id"


class Tenant(Protocol):
    """The clinic a piece of work acts in. Service functions that touch tenant tables take one,
    so their signature says which clinic their statements run under: the authenticated
    ``Principal`` is one; code with no caller (jobs, the CLI) uses :class:`InClinic`."""

    @property
    def clinic_id(self) -> uuid.UUID: ...


@dataclass(frozen=True, slots=True)
class InClinic:
    """A :class:`Tenant` for work no user asked for (a job, an operator's command)."""

    clinic_id: uuid.UUID


class TenancyError(RuntimeError):
    """A programming error: a statement for one clinic in a session entered in another."""


def check_tenant(session: AsyncSession | Session, tenant: Tenant) -> uuid.UUID:
    """The tenant's clinic, if the session is in it; a session in no or another clinic is a
    bug, never a request to serve (one transaction never switches clinics)."""
    entered = current_tenant(session)
    if entered != tenant.clinic_id:
        raise TenancyError(f"the session is in clinic {entered}, not {tenant.clinic_id}")
    return tenant.clinic_id


@dataclass(frozen=True, slots=True)
class Epochs:
    """The counters the database moves whenever who may act changes (migration 0008): the
    clinic's, and a user's when one was named; None for a row that is not there (or not
    visible). A credential resolved under the same epochs is still right (``app.auth.deps``)."""

    clinic: int | None
    user: int | None


async def enter_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, *, user_id: uuid.UUID | None = None
) -> Epochs:
    """Enter the transaction in ``tenant_id``'s clinic. A transaction enters one clinic only:
    work for another clinic takes a transaction of its own (:func:`in_clinic`).

    The same round trip answers the clinic's auth epochs (and ``user_id``'s)."""
    entered = current_tenant(session)
    if entered is not None and entered != tenant_id:
        raise TenancyError(f"this transaction is in clinic {entered}; {tenant_id} needs its own")
    session.info[TENANT_KEY] = tenant_id
    found = (
        await session.execute(
            text("SELECT clinic_epoch, user_epoch FROM vetify_enter(:clinic, :user)"),
            {"clinic": tenant_id, "user": user_id},
        )
    ).one()
    return Epochs(clinic=found.clinic_epoch, user=found.user_epoch)


async def enter_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Let the user see their own memberships in every clinic (for login and clinic switch)."""
    session.info[USER_KEY] = user_id
    await session.execute(text("SELECT set_config('app.user_id', :id, true)"), {"id": str(user_id)})


def current_tenant(session: AsyncSession | Session) -> uuid.UUID | None:
    value = session.info.get(TENANT_KEY)
    return value if isinstance(value, uuid.UUID) else None


@asynccontextmanager
async def in_clinic(
    session: AsyncSession, sessions: async_sessionmaker[AsyncSession], clinic_id: uuid.UUID
) -> AsyncIterator[AsyncSession]:
    """A session in ``clinic_id``: ``session`` itself if its transaction is in that clinic (or
    in none yet), otherwise a transaction of its own, committed when the block ends."""
    if current_tenant(session) in (None, clinic_id):
        await enter_tenant(session, clinic_id)
        yield session
        return
    async with sessions() as other, other.begin():
        await enter_tenant(other, clinic_id)
        yield other


@event.listens_for(Session, "after_transaction_end")
def _leave_tenant(session: Session, transaction: SessionTransaction) -> None:
    # set_config(..., true) ends with the transaction; so does the session's record of it.
    if transaction.parent is None:
        session.info.pop(TENANT_KEY, None)
        session.info.pop(USER_KEY, None)


@event.listens_for(Session, "do_orm_execute")
def _scope_statements(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.execution_options.get("vetify_user_scope"):
        # Cross-clinic read of the caller's own memberships; the database's own policy
        # (``app.user_id``) is what admits the rows.
        return
    tenant_id = state.session.info.get(TENANT_KEY)
    criteria: Any = (
        (lambda cls: cls.tenant_id == tenant_id) if tenant_id is not None else (lambda cls: false())
    )
    state.statement = state.statement.options(
        with_loader_criteria(TenantScoped, criteria, include_aliases=True)
    )


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _context: Any, _instances: Any) -> None:
    tenant_id = session.info.get(TENANT_KEY)
    for obj in session.new:
        if isinstance(obj, TenantScoped):
            if tenant_id is None:
                raise RuntimeError("a tenant row was added to a session with no clinic")
            if obj.tenant_id is None:
                obj.tenant_id = tenant_id
            elif obj.tenant_id != tenant_id:
                raise RuntimeError("a row of another clinic was added to this session")
