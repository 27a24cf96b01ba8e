"""A broken install, the `migrations` package gone or not a package, is named as such (the
`vetify` commands print it), not an AttributeError from deep inside Alembic's set-up."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest

from app.db import migrate


@pytest.mark.parametrize(
    "spec",
    [None, importlib.machinery.ModuleSpec("migrations", None)],
    ids=["absent", "a module, not a package"],
)
def test_a_missing_migrations_package_is_named(
    monkeypatch: pytest.MonkeyPatch, spec: importlib.machinery.ModuleSpec | None
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: spec if name == "migrations" else find_spec(name, *rest),
    )

    with pytest.raises(migrate.MigrationsMissing, match=r"^the migrations package is missing$"):
        migrate.alembic_config()
