from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.embedded import free_port
from app.main import create_app
from app.settings import Settings
from tests.harness.api import PROBLEM_JSON, assert_problem


async def test_live_and_ready(client):
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = (await client.get("/health/ready")).json()
    assert ready["status"] == "ok"
    assert ready["dependencies"] == {"database": "ok", "redis": "ok"}
    assert ready["rate_limits"] == "redis"


async def test_not_ready_when_the_schema_is_behind(client, database):
    owner = create_async_engine(database.owner_url)
    try:
        async with owner.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    finally:
        await owner.dispose()

    response = await client.get("/health/ready")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "head" in response.json()["detail"]


async def test_not_ready_when_the_database_is_unreachable():
    nowhere = f"postgresql+asyncpg://vetify_app@127.0.0.1:{free_port()}/vetify"
    app = create_app(Settings(database_url=nowhere))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
    assert live.status_code == 200
    assert_problem(ready, 503, "service-unavailable")
    assert "vetify_app" not in ready.text


async def test_ready_but_degraded_while_redis_is_down_and_healthy_again_after(client, redis_server):
    """Without Redis the service still serves (ADR 0008): readiness says "send me traffic", and
    reports what is missing (issue 16, defect 6: it answered 503)."""
    assert redis_server.control is not None
    redis_server.control.stop()
    try:
        down = await client.get("/health/ready")
        limited = await client.get("/api/v1/pets")  # spends a quota: the limiter finds Redis gone
        after_a_fallback = await client.get("/health/ready")
    finally:
        redis_server.control.start()
    back = await client.get("/health/ready")

    assert down.status_code == 200
    assert down.json()["status"] == "degraded"
    assert down.json()["dependencies"] == {"database": "ok", "redis": "unreachable"}
    assert limited.status_code == 401  # answered, on the in-memory fallback
    fallback = after_a_fallback.json()
    assert fallback["rate_limits"] == "memory (Redis unreachable)"
    assert fallback["redis_fallbacks"] >= 1
    assert back.status_code == 200
    assert back.json()["dependencies"]["redis"] == "ok"


async def test_data_routes_answer_503_with_retry_after_while_the_database_is_unreachable():
    nowhere = f"postgresql+asyncpg://vetify_app@127.0.0.1:{free_port()}/vetify"
    app = create_app(Settings(database_url=nowhere))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            response = await client.get(
                "/api/v1/pets", headers={"Authorization": "Bearer vtk_" + "0" * 32 + "_" + "x" * 43}
            )
    assert_problem(response, 503, "database-unavailable")
    assert response.headers["retry-after"] == "5"
