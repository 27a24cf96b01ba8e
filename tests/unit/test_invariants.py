"""Invariants the code states as exceptions (no runtime asserts in app/): each says what went
wrong instead of an AssertionError, or a misleading error further on."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from app import cli
from app.db import migrate
from app.db.session import DatabaseUnresolved, database_url
from app.kit import problems
from app.kit.storage import S3Storage
from app.settings import ConfigurationError, Settings, StorageBackend


@pytest.fixture(autouse=True)
def _no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The embedded default, away from any .env in the checkout.
    monkeypatch.delenv("VETIFY_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


def test_connecting_before_a_database_is_chosen_says_so() -> None:
    with pytest.raises(
        DatabaseUnresolved, match=r"^resolve the embedded database before connecting$"
    ):
        database_url(Settings())


def test_a_database_url_without_a_role_says_so() -> None:
    # `vetify migrate` grants to the role the service's URL names: none is no role to guess.
    with pytest.raises(ValueError, match=r"^the database URL must name its role$"):
        migrate.role_of("postgresql+asyncpg://db.example:5432/vetify")


def test_the_worker_on_the_embedded_database_is_refused() -> None:
    # Its PostgreSQL belongs to `vetify serve`, which runs the jobs itself.
    with pytest.raises(SystemExit, match="vetify worker: set VETIFY_DATABASE_URL"):
        cli.main(["worker"])


async def test_a_problem_handler_given_another_exception_says_so() -> None:
    app = FastAPI()
    problems.install(app)
    handler = app.exception_handlers[problems.Problem]
    with pytest.raises(problems.HandlerMismatch):
        await handler(Request({"type": "http"}), ValueError("not a problem"))


def test_s3_storage_without_a_bucket_is_refused(tmp_path: Path) -> None:
    # Settings refuse this at start-up; a settings object changed afterwards is refused here.
    changed = Settings().model_copy(update={"storage_backend": StorageBackend.s3})
    with pytest.raises(ConfigurationError):
        S3Storage(changed, tmp_path)
