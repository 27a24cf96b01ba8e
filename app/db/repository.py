"""Small helpers every domain service uses on top of the tenant-scoped session.

Each takes the :class:`~app.db.tenancy.Tenant` the work acts in and says so in the SQL
(``tenant_id = <clinic>``), after checking that the session was entered in that clinic. The
ORM hook (:mod:`app.db.tenancy`) and row-level security repeat the rule behind it.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import TENANTS, Entity, TenantScoped
from app.db.tenancy import TenancyError, Tenant, check_tenant
from app.kit.problems import FieldError, InvalidInput, NotFound

T = TypeVar("T", bound=Entity)


def belongs_to(tenant: Tenant, model: type[Entity]) -> ColumnElement[bool]:
    """The criterion that keeps ``model``'s rows to the tenant's clinic: ``tenant_id`` for a
    tenant table, ``id`` for the clinic's own row. Any other (global) table is refused."""
    if issubclass(model, TenantScoped):
        column: Any = model.tenant_id
    elif model.__table__.name == TENANTS:  # type: ignore[attr-defined]
        column = model.id
    else:
        raise TenancyError(f"{model.__name__} is not a clinic's table")
    criterion: ColumnElement[bool] = column == tenant.clinic_id
    return criterion


def of_clinic(tenant: Tenant, model: type[T]) -> Select[T]:
    """``SELECT model`` of the tenant's clinic: where every list, search and lookup starts."""
    return select(model).where(belongs_to(tenant, model))


async def find(
    session: AsyncSession, tenant: Tenant, model: type[T], item_id: uuid.UUID, *, lock: bool = False
) -> T | None:
    """The row with this id in the tenant's clinic (``lock``: ``FOR UPDATE``).

    A query rather than ``session.get``: ``get`` may answer from the identity map without
    SQL, and so without the tenant criteria.
    """
    check_tenant(session, tenant)
    query = of_clinic(tenant, model).where(model.id == item_id)
    if lock:
        query = query.with_for_update()
    return (await session.scalars(query)).one_or_none()


async def get_or_404(
    session: AsyncSession,
    tenant: Tenant,
    model: type[T],
    item_id: uuid.UUID,
    what: str,
    *,
    lock: bool = False,
) -> T:
    """The row in the tenant's clinic; another clinic's row is as absent as a missing one."""
    item = await find(session, tenant, model, item_id, lock=lock)
    if item is None:
        raise NotFound(f"No {what} with this id.")
    return item


async def referenced(
    session: AsyncSession,
    tenant: Tenant,
    model: type[T],
    item_id: uuid.UUID,
    field: str,
    what: str,
) -> T:
    """A row the request body points at; unknown (or another clinic's) is a 422 on that field."""
    item = await find(session, tenant, model, item_id)
    if item is None:
        raise InvalidInput(
            f"No {what} with this id.",
            [FieldError(loc=["body", field], msg=f"no {what} with this id", type="not_found")],
        )
    return item


def apply(item: Any, changes: BaseModel, *, exclude: set[str] | None = None) -> None:
    """Copy the fields the client actually sent (PATCH semantics)."""
    for key, value in changes.model_dump(exclude_unset=True, exclude=exclude).items():
        setattr(item, key, value)


def constraint_of(error: IntegrityError) -> str | None:
    """The name of the constraint an IntegrityError broke (asyncpg reports it on the cause)."""
    cause = getattr(error.orig, "__cause__", None)
    return getattr(cause, "constraint_name", None) or getattr(error.orig, "constraint_name", None)
