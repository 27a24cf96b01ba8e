"""Liveness and readiness probes (no authentication, no tenant)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.kit.problems import ServiceUnavailable, responses

router = APIRouter(prefix="/health", tags=["health"])
PROBE_TIMEOUT = 3.0
"""Seconds; well under the usual probe timeouts of load balancers and Kubernetes."""


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
    try:
        # A probe must answer quickly even when the database hangs (frozen, partitioned).
        async with asyncio.timeout(PROBE_TIMEOUT), request.app.state.engine.connect() as connection:
            versions = set(
                (await connection.scalars(text("SELECT version_num FROM alembic_version"))).all()
            )
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        raise ServiceUnavailable("The database is not reachable.") from exc
    if versions != request.app.state.schema_heads:
        raise ServiceUnavailable("The database schema is not at the migrations' head.")
    if request.app.state.redis is not None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await request.app.state.redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise ServiceUnavailable("Redis is not reachable.") from exc
    return Health(status="ok")
