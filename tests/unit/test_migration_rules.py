"""Expand, then contract (ADR 0040): a migration that destroys what the running version may
still read or write (drops a table or a column, changes or narrows a column's type, renames
one) says so, and why it is safe, in a module-level ``DESTRUCTIVE`` string. The scan reads each
migration's ``upgrade()``, its Alembic operations and its SQL."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app.db.migrate import migrations_dir

OPERATIONS = {"drop_table", "drop_column", "rename_table"}
"""Alembic operations that take away what a running version uses."""
ALTERED = {"type_", "new_column_name"}
"""``alter_column`` arguments that change a column under the running version."""
SQL = re.compile(
    r"\b(DROP\s+(TABLE|COLUMN)|ALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE|RENAME\s+(TO|COLUMN))\b",
    re.IGNORECASE,
)


def destructive(source: str) -> list[str]:
    """What ``upgrade()`` in the migration ``source`` destroys, one line each."""
    tree = ast.parse(source)
    found: list[str] = []
    for function in tree.body:
        if not (isinstance(function, ast.FunctionDef) and function.name == "upgrade"):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                if name in OPERATIONS or (
                    name == "alter_column" and ALTERED & {k.arg for k in node.keywords}
                ):
                    found.append(f"line {node.lineno}: op.{name}")
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and (match := SQL.search(node.value))
            ):
                found.append(f"line {node.lineno}: {match[0]!r}")
    return found


def marker(source: str) -> str | None:
    """The migration's ``DESTRUCTIVE = "why it is safe"``, if it has one."""
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["DESTRUCTIVE"]
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value.strip() or None
    return None


MIGRATIONS = sorted((migrations_dir() / "versions").glob("*.py"))


@pytest.mark.parametrize("path", MIGRATIONS, ids=[p.stem for p in MIGRATIONS])
def test_a_destructive_migration_says_why_it_is_safe(path: Path) -> None:
    source = path.read_text()
    found = destructive(source)
    if found:
        assert marker(source), (
            f"{path.name} destroys what a running version may use ({'; '.join(found)}):"
            " expand first, contract in a later release, or set DESTRUCTIVE = '<why it is"
            " safe>' (ADR 0040)"
        )


@pytest.mark.parametrize(
    ("upgrade", "flagged"),
    [
        ("op.drop_column('pets', 'alerts')", True),
        ("op.drop_table('pets')", True),
        ("op.rename_table('pets', 'animals')", True),
        ("op.alter_column('pets', 'name', type_=sa.String(20))", True),
        ("op.alter_column('pets', 'name', new_column_name='called')", True),
        ("op.execute('ALTER TABLE pets DROP COLUMN alerts')", True),
        ("op.execute('alter table pets alter column name type varchar(20)')", True),
        ("op.execute('ALTER TABLE pets RENAME COLUMN name TO called')", True),
        ("op.add_column('pets', sa.Column('x', sa.Text()))", False),
        ("op.alter_column('pets', 'name', nullable=True)", False),
        ("op.create_index('ix', 'pets', ['name'])", False),
        ("op.execute('CREATE INDEX ix ON pets (name)')", False),
    ],
)
def test_the_scan_finds_what_destroys_and_only_that(upgrade: str, flagged: bool) -> None:
    source = f"def upgrade() -> None:\n    {upgrade}\n\n\ndef downgrade() -> None:\n    {upgrade}\n"
    assert bool(destructive(source)) is flagged
    assert destructive(source.replace("def upgrade", "def other")) == []


def test_a_marker_must_give_a_reason() -> None:
    assert marker('DESTRUCTIVE = "copied first, read by no released version"\n')
    assert marker('DESTRUCTIVE = ""\n') is None
    assert marker("OTHER = 'x'\n") is None
