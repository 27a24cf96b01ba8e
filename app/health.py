"""Liveness and readiness probes (no authentication, no tenant)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.kit.problems import ServiceUnavailable, responses

router = APIRouter(prefix="/health", tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/live", summary="The process is up")
async def live() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    responses=responses(ServiceUnavailable),
    summary="The database answers and its schema is at the migrations' head",
)
async def ready(request: Request) -> Health:
    try:
        async with request.app.state.engine.connect() as connection:
            versions = set(
                (await connection.scalars(text("SELECT version_num FROM alembic_version"))).all()
            )
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailable("The database is not reachable.") from exc
    if versions != request.app.state.schema_heads:
        raise ServiceUnavailable("The database schema is not at the migrations' head.")
    return Health(status="ok")
