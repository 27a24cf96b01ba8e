"""The webhook's inbox (`app.billing.intake.receive`): a verified delivery is stored as Stripe
sent it (its time, its mode, its payload), pending, with no attempt yet, and its job queued; a
second delivery of the event is a duplicate that stores and queues nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from tests.harness.billing import deliver, stored
from tests.harness.stripe import events as fake

CREATED = 1_764_000_000  # 2025-11-24 16:00:00 UTC


async def _row(engine, event_id: str):
    async with engine.connect() as connection:
        return (
            await connection.execute(
                text(
                    "SELECT type, created, livemode, payload, status::text AS status, attempts"
                    " FROM stripe_events WHERE id = :id"
                ),
                {"id": event_id},
            )
        ).one()


async def test_a_delivery_is_stored_as_stripe_sent_it_and_once(client, superuser_engine) -> None:
    # One test for all of it: the mutation stage runs a module's fastest test first.
    test_mode = fake.event("customer.created", fake.official("customer"))
    del test_mode["livemode"]  # absent: Stripe's test mode
    assert (await deliver(client, test_mode)).status_code == 200
    row = await _row(superuser_engine, test_mode["id"])
    assert (row.livemode, row.status, row.attempts) == (False, "pending", 0)

    evt = fake.event("customer.created", fake.official("customer"), created=CREATED)
    evt["livemode"] = True  # a live-mode event says so
    first = await deliver(client, evt)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False}
    row = await _row(superuser_engine, evt["id"])
    assert row.type == "customer.created"
    assert row.created == dt.datetime(2025, 11, 24, 16, tzinfo=dt.UTC)
    assert (row.livemode, row.status, row.attempts) == (True, "pending", 0)
    assert row.payload == evt
    assert await stored(superuser_engine) == (2, 2)  # each event and its job

    again = await deliver(client, evt)
    assert again.status_code == 200, again.text
    assert again.json() == {"received": True, "duplicate": True}
    assert await stored(superuser_engine) == (2, 2)
