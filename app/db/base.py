"""Declarative base and the columns every table shares."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import (
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    MetaData,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from app.kit.ids import new_id

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


TENANTS = "clinics"
"""The table of tenants: every :class:`TenantScoped` row's ``tenant_id`` points at its ``id``."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class Entity:
    """A row with a time-ordered UUID and audit timestamps."""

    # Server-made values (timestamps) come back with the INSERT/UPDATE (RETURNING), so a
    # response can read them without another round trip.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id, sort_order=-10)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now(), sort_order=90)
    updated_at: Mapped[dt.datetime] = mapped_column(
        server_default=func.now(), onupdate=func.now(), sort_order=91
    )


class TenantScoped(Entity):
    """A row that belongs to one clinic.

    Every ORM statement on a subclass is filtered to the session's clinic
    (:mod:`app.db.tenancy`), and the table carries a row-level security policy that repeats the
    same rule in the database (``migrations/helpers.py``).
    """

    @declared_attr
    @classmethod
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(
            ForeignKey(f"{TENANTS}.id", ondelete="CASCADE"),
            index=True,
            nullable=False,
            sort_order=-9,
        )


def tenant_key() -> UniqueConstraint:
    """``UNIQUE (tenant_id, id)``: what :func:`tenant_fk` points at."""
    return UniqueConstraint("tenant_id", "id")


def tenant_fk(column: str, table: str, *, ondelete: str | None = None) -> ForeignKeyConstraint:
    """A reference that can only point inside the same clinic.

    A plain foreign key is checked without row-level security, so it would accept another
    clinic's id; pairing it with ``tenant_id`` makes a cross-clinic reference impossible.
    """
    return ForeignKeyConstraint(
        ["tenant_id", column], [f"{table}.tenant_id", f"{table}.id"], ondelete=ondelete
    )


def pg_enum(cls: type[StrEnum], name: str) -> Enum:
    """A PostgreSQL enum type that stores the members' values (what the API shows)."""
    return Enum(cls, name=name, values_callable=lambda members: [m.value for m in members])
