"""What the Stripe contract tests share: counting what the webhook stored, reading a clinic's
billing state as its owner."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.world import ClinicWorld

BILLING = "/api/v1/billing"


async def stored(engine: AsyncEngine) -> tuple[int, int]:
    """(rows of ``stripe_events``, procrastinate jobs): everything a delivery may leave."""
    async with engine.connect() as connection:
        events = await connection.scalar(text("SELECT count(*) FROM stripe_events"))
        jobs = await connection.scalar(text("SELECT count(*) FROM procrastinate_jobs"))
    return int(events or 0), int(jobs or 0)


async def event_row(engine: AsyncEngine, event_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT status::text AS status, clinic_id, note, attempts, last_error"
                    " FROM stripe_events WHERE id = :id"
                ),
                {"id": event_id},
            )
        ).one()
    return dict(row._mapping)


async def billing(client: httpx.AsyncClient, clinic: ClinicWorld) -> dict[str, Any]:
    response = await client.get(BILLING, headers=clinic.owner.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
