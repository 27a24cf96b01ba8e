"""The application factory: ``create_app(settings)`` wires middleware, routers and lifespan."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from redis.asyncio import Redis
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import health
from app.appointments.routes import router as appointments_router
from app.attachments.routes import UPLOAD_PATH
from app.attachments.routes import router as attachments_router
from app.audit import trail  # noqa: F401 - its session hooks write the audit trail (ADR 0027)
from app.audit.routes import router as audit_router
from app.audit.security import SecurityTrail
from app.auth.cache import CredentialCache
from app.auth.deps import document_permissions
from app.auth.lifecycle_routes import router as lifecycle_router
from app.auth.lockout import LoginGuard
from app.auth.quotas import Quotas
from app.auth.routes import router as auth_router
from app.billing import stripe_api
from app.billing.account import standing
from app.billing.routes import WEBHOOK_PATH
from app.billing.routes import router as billing_router
from app.clinics.routes import router as clinics_router
from app.clinics.routes import signup_router
from app.customers.routes import router as customers_router
from app.db.migrate import head_revisions
from app.db.session import create_engine, session_factory
from app.keys import service as keys
from app.kit import crypto, passwords, problems
from app.kit.bodies import BodyLimits
from app.kit.events import SecurityEvent, security_event
from app.kit.headers import SecurityHeaders
from app.kit.heads import RequestHeadLimits
from app.kit.lifecycle import JOBS_SHARE
from app.kit.logs import hold_clients_at_info
from app.kit.openapi import install_docs, problem_aware_openapi
from app.kit.ratelimit import Limiter, RateLimitHeaders
from app.kit.storage import storage_from
from app.kit.uploads import MULTIPART_HEADROOM
from app.kit.usage import Usage
from app.observability import metrics, requests, scrape, tracing, usage
from app.observability.dependencies import Cached, Probe
from app.observability.red import RequestMetrics
from app.pets.routes import router as pets_router
from app.privacy.routes import router as privacy_router
from app.production import database_role_refusal
from app.queue import Worker
from app.records.routes import router as records_router
from app.settings import ConfigurationError, Environment, Settings
from app.staff.routes import router as staff_router
from app.web import site

ROUTERS = (
    health.router,
    signup_router,
    auth_router,
    lifecycle_router,
    clinics_router,
    staff_router,
    customers_router,
    privacy_router,
    pets_router,
    appointments_router,
    records_router,
    attachments_router,
    billing_router,
    audit_router,
)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The process's argon2id parameters, set as the app starts (as the password pool is):
        # an app started again after another with other settings hashes with its own.
        crypto.configure_password_hashing(
            time_cost=settings.password_hash_time_cost,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
        keys.configure(keys.wrapper_from(settings))
        hold_clients_at_info()
        engine = create_engine(settings)
        metrics.announce_build(settings)
        metrics.watch_pool(engine, settings.db_pool_size)
        metrics.count_security_events()
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.storage = storage_from(settings)
        app.state.redis = (
            Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2)
            if settings.redis_url
            else None
        )
        app.state.limiter = Limiter(
            settings.redis_url.get_secret_value() if settings.redis_url else None
        )
        app.state.login_guard = LoginGuard.from_settings(app.state.limiter, settings)
        app.state.credentials = CredentialCache(settings.credential_cache_size)
        app.state.password_pool = passwords.configure(
            settings.password_hash_workers,
            settings.password_hash_queue,
            settings.password_hash_wait_seconds,
        )
        # Made per start: an app started again (the tests do) counts from nothing.
        app.state.usage = Usage()
        flusher = usage.flusher(engine, app.state.usage, settings).start()
        worker: Worker | None = None
        try:
            if settings.env is Environment.production:
                # The URL's user name says little (any role can be made superuser): ask.
                why = await database_role_refusal(engine)
                if why:
                    security_event(
                        SecurityEvent.production_settings_refused,
                        outcome="refused",
                        settings=["database_url"],
                    )
                    raise ConfigurationError({"database_url": why})
            if settings.jobs_in_process:
                worker = Worker(
                    settings, settings.shutdown_timeout_seconds * JOBS_SHARE, app.state.usage
                ).start()
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await flusher.stop()  # after the jobs, whose runs it adds too
            await app.state.limiter.close()
            if app.state.redis is not None:
                await app.state.redis.aclose()
            await engine.dispose()
            metrics.forget_pool(settings.db_pool_size)

    app = FastAPI(
        title="Vetify",
        version="1.0.0",
        summary="Practice management for veterinary clinics",
        lifespan=lifespan,
        debug=settings.debug,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry spans, metrics and exception logs stay off, whatever
        # provider is set: it would record a search's query string as sent (a client's name)
        # and exceptions' messages. Requests are traced by app/observability/tracing.py.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Every route puts its template in the request's context, for the lines it logs.
        dependencies=[Depends(requests.bind_route)],
    )
    install_docs(app)
    app.state.settings = settings
    app.state.quotas = Quotas.from_settings(settings)
    # Billing's view of a clinic, attached to every caller by app.auth.deps.
    app.state.standing_of = standing
    # Dependencies of domains, for /health/dependencies (app/health.py may not import them).
    app.state.dependency_probes = dependency_probes(settings)
    app.state.schema_heads = head_revisions()
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    site.install(app)
    if settings.metrics_token is not None:
        app.include_router(scrape.router(settings, settings.metrics_token))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_aware_openapi(app)
            document_permissions(app, app.openapi_schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    _add_middleware(app, settings)
    tracing.instrument_app(app)  # when on: outside every middleware, so a 413 or 429 is traced
    # Outermost of all: every answer, a 500 or a 429 too, is made in the request's context.
    requests.install(app)
    return app


def dependency_probes(settings: Settings) -> dict[str, Probe | None]:
    stripe = None
    if settings.stripe_api_key is not None:
        # Cached: Stripe's API is rate-limited, and an uptime check may ask every few seconds.
        probe = functools.partial(stripe_api.probe, settings)
        stripe = Cached(probe, settings.stripe_probe_cache_seconds)
    return {"stripe": stripe}


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost first: the client's real address and scheme, then headers that every answer
    carries (even a 413 or a 429), then the URL and header limits, then CORS, then the body
    limits; innermost, the recording of the security events the routes raise."""
    app.add_middleware(SecurityTrail)
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        read_timeout=settings.body_read_timeout_seconds,
        larger=[(UPLOAD_PATH, settings.upload_max_bytes + MULTIPART_HEADROOM)],
        verbatim=[WEBHOOK_PATH],
    )
    if settings.cors_allow_origins:  # closed by default: no CORS header for anyone
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-CSRF-Token"],
            expose_headers=["RateLimit", "RateLimit-Policy", "Retry-After", "Location"],
            max_age=600,
        )
    app.add_middleware(
        RequestHeadLimits,
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(SecurityHeaders)
    # Around everything that may answer (a 413, a 429), inside the client's real scheme.
    app.add_middleware(RequestMetrics)
    # Only a configured proxy is believed about who the client is and whether it used HTTPS.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
