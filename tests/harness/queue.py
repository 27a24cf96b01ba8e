"""The job queue in tests: run what is due, and let time pass for retries."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.queue import run_worker
from app.settings import Settings


async def drain(settings: Settings) -> None:
    """Run every job that is due, then return (the worker `vetify worker` runs, not waiting)."""
    await run_worker(settings, wait=False)


async def due_now(settings: Settings) -> None:
    """The retries' backoff has passed: procrastinate schedules a retry ahead of now."""
    assert settings.database_url is not None
    engine = create_async_engine(settings.database_url.get_secret_value())
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")
            )
    finally:
        await engine.dispose()
