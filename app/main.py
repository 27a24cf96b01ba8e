"""The application factory: ``create_app(settings)`` wires middleware, routers and lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis

from app import health
from app.appointments.routes import router as appointments_router
from app.attachments.routes import router as attachments_router
from app.auth.deps import document_permissions
from app.auth.routes import router as auth_router
from app.clinics.routes import router as clinics_router
from app.customers.routes import router as customers_router
from app.db.migrate import head_revisions
from app.db.session import create_engine, session_factory
from app.kit import problems
from app.kit.openapi import install_docs, problem_aware_openapi
from app.kit.storage import storage_from
from app.pets.routes import router as pets_router
from app.records.routes import router as records_router
from app.settings import Settings
from app.staff.routes import router as staff_router

ROUTERS = (
    health.router,
    auth_router,
    clinics_router,
    staff_router,
    customers_router,
    pets_router,
    appointments_router,
    records_router,
    attachments_router,
)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.storage = storage_from(settings)
        app.state.redis = (
            Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2)
            if settings.redis_url
            else None
        )
        try:
            yield
        finally:
            if app.state.redis is not None:
                await app.state.redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Vetify",
        version="1.0.0",
        summary="Practice management for veterinary clinics",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.schema_heads = head_revisions()
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_aware_openapi(app)
            document_permissions(app, app.openapi_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
