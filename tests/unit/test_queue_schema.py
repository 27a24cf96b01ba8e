"""The job queue's schema is procrastinate's, as released with the installed version: a new
procrastinate must come with a migration of ours that brings the schema along (ADR 0012)."""

from __future__ import annotations

from importlib.metadata import version

from procrastinate.schema import SchemaManager

from app.db.migrate import migrations_dir


def test_migration_holds_the_installed_procrastinates_schema() -> None:
    vendored = migrations_dir() / "sql" / f"procrastinate-{version('procrastinate')}.sql"
    assert vendored.exists(), (
        f"procrastinate {version('procrastinate')} is installed, but migrations/sql has no schema"
        " of it: add a migration applying its migration scripts, then vendor its schema.sql"
    )
    assert vendored.read_text(encoding="utf-8") == SchemaManager.get_schema()
