"""Alembic environment: async engine, the owner role's URL, the service role to grant to."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.migrate import lock_migrations
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """The job queue's tables are procrastinate's own schema (migration 0005), not models."""
    return not (type_ in ("table", "index") and (name or "").startswith("procrastinate_"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    url = config.attributes.get("url")
    if not url:
        raise RuntimeError("no database URL: run migrations with `vetify migrate`")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(lock_migrations)
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        # Closes the connection, and so releases the lock.
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
asyncio.run(_online())
