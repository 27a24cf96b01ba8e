"""Liveness and readiness probes (no authentication, no tenant).

Readiness means "send me traffic": the database is required (503 without it), Redis is not (rate
limits fall back to each process's memory, ADR 0008), so a Redis outage is reported as
``degraded`` and the probe stays 200; a 503 would drain every replica at once.
"""

from __future__ import annotations

import asyncio
import hmac
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.kit.problems import NotFound, ServiceUnavailable, Unauthenticated, responses
from app.observability import dependencies

router = APIRouter(prefix="/health", tags=["health"])
ANSWER_MARGIN = 0.2
"""Seconds of ``VETIFY_READY_TIMEOUT_SECONDS`` kept for answering once the checks are cut."""
REDIS_PING_SECONDS = 1.0
"""The longest the probe waits for Redis, which decides nothing: a hung Redis delays it so much."""


class Health(BaseModel):
    status: str


class Serving(StrEnum):
    ok = "ok"
    degraded = "degraded"


class Dependency(StrEnum):
    ok = "ok"
    unreachable = "unreachable"
    not_configured = "not configured"


class Dependencies(BaseModel):
    database: Dependency = Field(description="Always ok in a 200: without it, the probe is a 503")
    redis: Dependency


class Readiness(BaseModel):
    status: Serving = Field(
        description="degraded: serving, with Redis unreachable or rate limits on the fallback"
    )
    dependencies: Dependencies
    rate_limits: str = Field(
        max_length=100,
        description="Where this process keeps rate limits now: redis, memory, or memory (Redis"
        " unreachable)",
    )
    redis_fallbacks: int = Field(
        ge=0, description="Times this process's rate limiter fell back from Redis to memory"
    )


@router.get("/live", summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    responses=responses(ServiceUnavailable),
    summary="Ready for traffic: the database answers and its schema is at head (Redis reported)",
)
async def ready(request: Request) -> Readiness:
    # A probe must answer in time even when a dependency hangs (frozen, partitioned): the checks
    # run side by side, each cut at its deadline.
    state = request.app.state
    within = state.settings.ready_timeout_seconds - ANSWER_MARGIN
    problem, redis = await asyncio.gather(
        _database(state, within), _redis(state, min(within, REDIS_PING_SECONDS))
    )
    if problem:
        raise ServiceUnavailable(problem)
    limiter = state.limiter
    degraded = redis is Dependency.unreachable or limiter.degraded
    return Readiness(
        status=Serving.degraded if degraded else Serving.ok,
        dependencies=Dependencies(database=Dependency.ok, redis=redis),
        rate_limits=limiter.backend,
        redis_fallbacks=limiter.degradations,
    )


async def _database(state: Any, within: float) -> str | None:
    """What keeps the service from serving, if anything."""
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


async def _redis(state: Any, within: float) -> Dependency:
    if state.redis is None:
        return Dependency.not_configured
    try:
        async with asyncio.timeout(within):
            await state.redis.ping()
    except (RedisError, OSError):
        return Dependency.unreachable
    return Dependency.ok


class DependencyOut(BaseModel):
    status: dependencies.Status
    required: bool = Field(description="The service cannot work without it")
    latency_ms: float | None = Field(ge=0, description="None when not configured")
    detail: str | None = Field(max_length=500, description="What the probe saw, in words")


class DependencyStates(BaseModel):
    database: DependencyOut
    redis: DependencyOut
    worker: DependencyOut = Field(description="The job workers' heartbeat (last seen)")
    queue: DependencyOut = Field(description="The oldest due job still waiting")
    stripe: DependencyOut
    smtp: DependencyOut
    s3: DependencyOut
    clamd: DependencyOut


class DependencyReport(BaseModel):
    status: dependencies.Status = Field(
        description="down: a required dependency is down; degraded: another is down or slow"
    )
    dependencies: DependencyStates


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="VETIFY_OPERATOR_TOKEN (operators, uptime checks)",
)


def operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Operators only: the bearer token ``VETIFY_OPERATOR_TOKEN``; without one configured the
    route does not exist (404), so a deployment that never set it exposes nothing."""
    expected = request.app.state.settings.operator_token
    if expected is None:
        raise NotFound()
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthenticated("Send the operator token as a bearer token.")


@router.get(
    "/dependencies",
    dependencies=[Depends(operator)],
    responses=responses(Unauthenticated, NotFound),
    summary="Each dependency's state and latency (operators: the bearer VETIFY_OPERATOR_TOKEN)",
)
async def dependency_report(request: Request) -> DependencyReport:
    found = await dependency_report_of(request.app.state)
    return DependencyReport.model_validate(found.as_json())


async def dependency_report_of(state: Any) -> dependencies.Report:
    """The report for the app whose ``state`` this is (also what `vetify check` prints)."""
    settings = state.settings
    checks = dependencies.checks(
        settings, state.engine, state.redis, state.storage, state.dependency_probes
    )
    return await dependencies.report(checks, settings.ready_timeout_seconds - ANSWER_MARGIN)
