"""The lookup helpers every domain service uses (app/db/repository.py) on the real database:
a row taken for update stays locked, and a row the clinic cannot see is answered as absent,
saying what was looked for."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.clinics.models import Location
from app.db.repository import get_or_404, referenced
from app.db.tenancy import InClinic
from app.kit.problems import FieldError, InvalidInput, NotFound


async def test_a_row_got_for_update_is_locked_until_its_transaction_ends(
    world, superuser_engine
) -> None:
    # What serialises two requests changing one row (an attachment's scan result, a billing
    # account): the second waits for the first's commit instead of overwriting it.
    clinic = await world.clinic(roles=())
    location = clinic.setup.location
    locked = text("SELECT 1 FROM locations WHERE id = :id FOR UPDATE NOWAIT")
    async with world.session(clinic.id) as session:
        await get_or_404(session, InClinic(clinic.id), Location, location.id, "location", lock=True)
        async with superuser_engine.connect() as other:
            with pytest.raises(DBAPIError) as refused:
                await other.execute(locked, {"id": location.id})
    assert isinstance(refused.value.orig.__cause__, asyncpg.LockNotAvailableError)
    async with superuser_engine.connect() as other:
        assert await other.scalar(locked, {"id": location.id}) == 1


async def test_the_clinics_own_row_is_found(world) -> None:
    clinic = await world.clinic(roles=())
    location = clinic.setup.location.id
    async with world.session(clinic.id) as session:
        tenant = InClinic(clinic.id)
        got = await get_or_404(session, tenant, Location, location, "location")
        pointed_at = await referenced(
            session, tenant, Location, location, "location_id", "location"
        )
    assert got.id == pointed_at.id == location


async def test_another_clinics_row_is_absent_and_the_answer_says_what_was_looked_for(
    world,
) -> None:
    here, there = await world.clinic(roles=()), await world.clinic(roles=())
    elsewhere = there.setup.location.id
    async with world.session(here.id) as session:
        with pytest.raises(NotFound) as absent:
            await get_or_404(session, InClinic(here.id), Location, elsewhere, "location")
        with pytest.raises(InvalidInput) as unknown:
            await referenced(
                session, InClinic(here.id), Location, elsewhere, "location_id", "location"
            )
    assert absent.value.detail == "No location with this id."
    assert unknown.value.detail == "No location with this id."
    # The field's error is what a form shows beside the field; its type is what a client
    # switches on.
    assert unknown.value.errors == [
        FieldError(loc=["body", "location_id"], msg="no location with this id", type="not_found")
    ]
