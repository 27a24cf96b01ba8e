"""Liveness and readiness probes (no authentication, no tenant)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.kit.problems import ServiceUnavailable, responses

router = APIRouter(prefix="/health", tags=["health"])
ANSWER_MARGIN = 0.2
"""Seconds of ``VETIFY_READY_TIMEOUT_SECONDS`` kept for answering once the checks are cut."""


class Health(BaseModel):
    status: str


@router.get("/live", summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    responses=responses(ServiceUnavailable),
    summary="The database answers, its schema is at head, and Redis (if configured) answers",
)
async def ready(request: Request) -> Health:
    # A probe must answer in time even when a dependency hangs (frozen, partitioned): the checks
    # run side by side, each cut at the deadline.
    state = request.app.state
    within = state.settings.ready_timeout_seconds - ANSWER_MARGIN
    for problem in await asyncio.gather(_database(state, within), _redis(state, within)):
        if problem:
            raise ServiceUnavailable(problem)
    return Health(status="ok")


async def _database(state: Any, within: float) -> str | None:
    try:
        async with asyncio.timeout(within), state.engine.connect() as connection:
            versions = set(
                (await connection.scalars(text("SELECT version_num FROM alembic_version"))).all()
            )
    except (SQLAlchemyError, OSError):  # OSError: refused, reset, and the deadline
        return "The database is not reachable."
    if versions != state.schema_heads:
        return "The database schema is not at the migrations' head."
    return None


async def _redis(state: Any, within: float) -> str | None:
    if state.redis is None:
        return None
    try:
        async with asyncio.timeout(within):
            await state.redis.ping()
    except (RedisError, OSError):
        return "Redis is not reachable."
    return None
