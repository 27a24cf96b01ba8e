"""Every table of a clinic's is either restored by `vetify clinic restore` or named as left as
it is, with its reason (app/privacy/restore.py): a table added later forces the choice."""

from __future__ import annotations

from app import models  # noqa: F401  (every table in the metadata)
from app.db.base import Base
from app.privacy import restore


def test_each_clinic_table_is_restored_or_left_by_name() -> None:
    scoped = {table.name for table in Base.metadata.sorted_tables if "tenant_id" in table.c}
    restored = [table.name for table in restore.restored_tables()]
    assert set(restored) | restore.LEFT == scoped
    assert not set(restored) & restore.LEFT
    assert set(restore.HELD) <= set(restored)


def test_parents_are_restored_before_their_children() -> None:
    order = {table.name: place for place, table in enumerate(restore.restored_tables())}
    for table in restore.restored_tables():
        for key in table.foreign_key_constraints:
            parent = key.referred_table.name
            if parent in order:
                assert order[parent] < order[table.name], (parent, table.name)
