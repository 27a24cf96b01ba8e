"""The job queue in tests: run what is due, and let time pass for retries."""

from __future__ import annotations

from sqlalchemy import text

from app.kit.usage import Usage
from app.queue import run_worker
from app.settings import Settings
from tests.harness import databases


async def drain(settings: Settings, usage: Usage | None = None) -> None:
    """Run every job that is due, then return (the worker `vetify worker` runs, not waiting),
    counting their runs in ``usage`` if given."""
    await run_worker(settings, wait=False, usage=usage)


async def due_now(settings: Settings) -> None:
    """The retries' backoff has passed: procrastinate schedules a retry ahead of now."""
    assert settings.database_url is not None
    engine = databases.engine(settings.database_url.get_secret_value())
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")
            )
    finally:
        await engine.dispose()
