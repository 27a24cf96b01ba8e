"""Keyset (cursor) pagination with a bounded page size.

A cursor is the sort key of the last item of a page, opaque to clients. Keyset paging stays
correct while rows are added between pages and costs the same on page 1 and page 1000.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, inspect, tuple_
from sqlalchemy.orm import InstrumentedAttribute

from app.kit.problems import InvalidInput

T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
CursorParam = Annotated[
    str | None,
    Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$", description="From the previous page"),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None,
        max_length=200,
        description="Pass as `cursor` for the next page; null at the end",
    )


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [str(value) for value in values]  # a datetime's str is ISO 8601 with a space
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


FOREIGN_CURSOR = "The cursor is not one this service issued."


def _decode(cursor: str, columns: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    """The sort key ``cursor`` holds, one value per column; any other string is a 422."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list):
            raise TypeError  # (an object's keys would pass for values)
        # zip's strict raises ValueError on a key of another length.
        return [_value(column, value) for column, value in zip(columns, raw, strict=True)]
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise InvalidInput(FOREIGN_CURSOR) from exc


def _value(column: InstrumentedAttribute[Any], value: Any) -> uuid.UUID | dt.datetime | int:
    if not isinstance(value, str):
        raise TypeError
    kind = column.type.python_type
    if kind is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if kind is int:
        # Plain ASCII digits of a bigint (int() takes "+1", " 1", other scripts' digits, 10**99).
        if not (value.isascii() and value.isdigit() and int(value) <= BIGINT_MAX):
            raise ValueError
        return int(value)
    return uuid.UUID(value)


BIGINT_MAX = 2**63 - 1


async def paginate(
    session: Any,
    query: Select[*tuple[Any, ...]],
    order_by: Sequence[InstrumentedAttribute[Any]],
    cursor: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """One page of ``query``'s rows ordered by ``order_by``: timestamp, UUID and integer columns
    (what a cursor holds), the last one unique."""
    if cursor:
        query = query.where(tuple_(*order_by) > tuple_(*_decode(cursor, order_by)))
    result = await session.execute(query.order_by(*order_by).limit(limit + 1))
    # One entity selected: the ORM objects; several columns: the rows.
    rows = list(result.scalars().all() if len(query.column_descriptions) == 1 else result.all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor([getattr(last, column.key) for column in order_by])


async def page(
    session: Any,
    query: Select[*tuple[Any, ...]],
    schema: type[S],
    cursor: str | None,
    limit: int,
    order_by: Sequence[InstrumentedAttribute[Any]] | None = None,
) -> Page[S]:
    """A :class:`Page` of ``schema`` items; ordered by the entity's id unless told otherwise."""
    rows, next_cursor = await rows_for(session, query, schema, cursor, limit, order_by)
    return Page[schema](  # type: ignore[valid-type]
        items=[schema.model_validate(row) for row in rows], next_cursor=next_cursor
    )


async def rows_for(
    session: Any,
    query: Select[*tuple[Any, ...]],
    schema: type[BaseModel],
    cursor: str | None,
    limit: int,
    order_by: Sequence[InstrumentedAttribute[Any]] | None = None,
) -> tuple[Sequence[Any], str | None]:
    """A page of ``query``'s rows, reading only the columns ``schema`` names when each is one
    (see :func:`page`), for a caller that makes its answers from them itself; and the cursor of
    the next page."""
    if order_by is None:
        order_by = [query.column_descriptions[0]["entity"].id]
    query = _columns_of(query, schema, order_by)
    return await paginate(session, query, order_by, cursor, limit)


def _columns_of(
    query: Select[*tuple[Any, ...]],
    schema: type[BaseModel],
    order_by: Sequence[InstrumentedAttribute[Any]],
) -> Select[*tuple[Any, ...]]:
    """``query`` of one entity selecting only the columns ``schema`` (and the order) reads, when
    each of its fields is one: rows straight to the schema, with no ORM object built (identity
    map, instance state) for each. Still an ORM statement of the entity's attributes, so the
    tenant filter (``app.db.tenancy``) applies as before. Otherwise ``query`` itself."""
    descriptions = query.column_descriptions
    entity = descriptions[0]["entity"] if len(descriptions) == 1 else None
    # Loader options (eager loads) need the entity itself.
    if entity is None or descriptions[0]["expr"] is not entity or query._with_options:
        return query
    columns = inspect(entity).column_attrs
    wanted = dict.fromkeys([*schema.model_fields, *(column.key for column in order_by)])
    if len(wanted) < 2 or not all(name in columns for name in wanted):
        return query  # (one column would come back as scalars, not rows)
    return query.with_only_columns(*(getattr(entity, name) for name in wanted))
