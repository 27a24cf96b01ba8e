"""Small helpers every domain service uses on top of the tenant-scoped session."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.problems import FieldError, InvalidInput, NotFound

T = TypeVar("T")


async def find(session: AsyncSession, model: type[T], item_id: uuid.UUID) -> T | None:
    """The row with this id in the session's clinic.

    A query rather than ``session.get``: ``get`` may answer from the identity map without
    SQL, and so without the tenant criteria.
    """
    column = model.id  # type: ignore[attr-defined]
    return (await session.scalars(select(model).where(column == item_id))).one_or_none()


async def get_or_404(session: AsyncSession, model: type[T], item_id: uuid.UUID, what: str) -> T:
    """The row in the caller's clinic; another clinic's row is as absent as a missing one."""
    item = await find(session, model, item_id)
    if item is None:
        raise NotFound(f"No {what} with this id.")
    return item


async def referenced(
    session: AsyncSession, model: type[T], item_id: uuid.UUID, field: str, what: str
) -> T:
    """A row the request body points at; unknown (or another clinic's) is a 422 on that field."""
    item = await find(session, model, item_id)
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
