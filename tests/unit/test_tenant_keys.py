"""The schema's building blocks as the DDL says them: the composite keys that keep a reference
inside one clinic, and enum types that store what the API shows. The models are built from
them at import; here each is built afresh, so a change to one shows."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Column, MetaData, Table, Uuid, literal
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from app.db.base import pg_enum, tenant_fk, tenant_key

DIALECT = postgresql.dialect()


def _ddl(table: Table) -> str:
    return " ".join(str(CreateTable(table).compile(dialect=DIALECT)).split())


def test_a_reference_names_its_clinic_with_the_row_it_points_at() -> None:
    # A plain foreign key is checked without row-level security: without tenant_id beside the
    # id, a row could point at another clinic's.
    metadata = MetaData()
    owners = Table(
        "owners",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("tenant_id", Uuid, nullable=False),
        tenant_key(),
    )
    visits = Table(
        "visits",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("tenant_id", Uuid, nullable=False),
        Column("owner_id", Uuid),
        Column("notes_id", Uuid),
        tenant_fk("owner_id", "owners", ondelete="CASCADE"),
        tenant_fk("notes_id", "owners"),
    )

    assert "UNIQUE (tenant_id, id)" in _ddl(owners)
    visits_ddl = _ddl(visits)
    assert (
        "FOREIGN KEY(tenant_id, owner_id) REFERENCES owners (tenant_id, id) ON DELETE CASCADE"
        in visits_ddl
    )
    assert "FOREIGN KEY(tenant_id, notes_id) REFERENCES owners (tenant_id, id) )" in visits_ddl


class Size(StrEnum):
    SMALL = "small"
    EXTRA_LARGE = "extra large"


def test_an_enum_type_has_its_own_name_and_stores_the_members_values() -> None:
    # The values are what the API shows and what the migrations created the type with; the
    # members' names (EXTRA_LARGE) are Python's alone.
    size = pg_enum(Size, "pet_size")

    assert (size.name, size.enums, size.enum_class) == ("pet_size", ["small", "extra large"], Size)
    created = postgresql.CreateEnumType(size).compile(dialect=DIALECT)
    assert str(created) == "CREATE TYPE pet_size AS ENUM ('small', 'extra large')"
    stored = literal(Size.EXTRA_LARGE, size).compile(
        dialect=DIALECT, compile_kwargs={"literal_binds": True}
    )
    assert str(stored) == "'extra large'"
