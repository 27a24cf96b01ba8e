"""The published OpenAPI document, docs/openapi.json: built from the app, written canonically.

Regenerate it after changing the API (from the repository root)::

    python -m tests.contract.snapshot

The document comes from ``create_app`` with a placeholder database URL; its lifespan never runs,
so nothing is connected to. The same document drives the discovery in tests/security.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.main import create_app
from app.settings import Environment, Settings

SNAPSHOT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "python -m tests.contract.snapshot"


def offline_app() -> FastAPI:
    """The app as configured for tests, never started: for reading its routes and document."""
    # Explicit values win over VETIFY_* variables, so a developer's environment cannot leak in.
    settings = Settings(
        env=Environment.test,
        database_url="postgresql+asyncpg://vetify@localhost/vetify",
        database_owner_url=None,
        redis_url=None,
    )
    return create_app(settings)


@cache
def _document() -> str:
    return json.dumps(offline_app().openapi())


def document() -> dict[str, Any]:
    """A fresh copy of the app's OpenAPI document."""
    loaded: dict[str, Any] = json.loads(_document())
    return loaded


def render(doc: dict[str, Any]) -> str:
    """The canonical text: two-space indent, sorted keys, UTF-8, a trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(method, path, operation)`` for every operation, in document order."""
    return [
        (method, path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "patch", "delete", "head", "options"}
    ]


def main() -> int:
    SNAPSHOT.write_text(render(document()), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
