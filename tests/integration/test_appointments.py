from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import text

from app.auth.models import Role
from app.kit.clock import utcnow
from fixtures.clinics import add_member
from fixtures.factories import (
    AppointmentTypeFactory,
    CustomerFactory,
    PetFactory,
    RoomFactory,
    UserFactory,
    create,
)
from tests.harness.api import PROBLEM_JSON, assert_problem

# Next year's 4 March: within the service's horizon, and a day Lisbon keeps UTC.
START = dt.datetime(utcnow().year + 1, 3, 4, 9, 0, tzinfo=dt.UTC)


def at(minutes: int) -> str:
    return (START + dt.timedelta(minutes=minutes)).isoformat()


@pytest.fixture
async def book(world):
    """A clinic with a pet, a vet, a room and a 30-minute appointment type."""
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    room = await world.make(clinic, RoomFactory, location_id=clinic.setup.location.id)
    kind = await world.make(clinic, AppointmentTypeFactory, default_duration_minutes=30)
    return {
        "clinic": clinic,
        "headers": clinic.actors[Role.receptionist].headers,
        "pet_id": str(pet.id),
        "vet_id": str(clinic.setup.staff[Role.vet].id),
        "room_id": str(room.id),
        "type_id": str(kind.id),
    }


async def _book(client, book, start, end=None, **extra):
    body = {"pet_id": book["pet_id"], "vet_id": book["vet_id"], "starts_at": start, **extra}
    if end:
        body["ends_at"] = end
    return await client.post("/api/v1/appointments", json=body, headers=book["headers"])


async def test_booking_takes_its_length_from_the_appointment_type(client, book):
    response = await _book(client, book, at(0), appointment_type_id=book["type_id"])

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "scheduled"
    assert dt.datetime.fromisoformat(body["ends_at"]) == START + dt.timedelta(minutes=30)


async def test_overlapping_booking_for_the_same_vet_is_a_409_problem(client, book):
    assert (await _book(client, book, at(0), at(30))).status_code == 201

    clash = await _book(client, book, at(15), at(45))

    assert_problem(clash, 409, "booking-conflict")
    assert "vet" in clash.json()["detail"]


async def test_back_to_back_bookings_do_not_overlap(client, book):
    assert (await _book(client, book, at(0), at(30))).status_code == 201
    assert (await _book(client, book, at(30), at(60))).status_code == 201


async def test_the_same_room_cannot_be_double_booked_even_with_different_vets(client, book):
    clinic = book["clinic"]
    first = await _book(client, book, at(0), at(30), room_id=book["room_id"])
    other_vet = {**book, "vet_id": str(clinic.setup.staff[Role.owner].id)}
    clash = await _book(client, other_vet, at(10), at(20), room_id=book["room_id"])

    assert first.status_code == 201
    assert clash.status_code == 409
    assert "room" in clash.json()["detail"]


async def test_a_cancelled_appointment_frees_its_slot(client, book):
    first = (await _book(client, book, at(0), at(30))).json()
    cancel = await client.post(
        f"/api/v1/appointments/{first['id']}/status",
        json={"status": "cancelled"},
        headers=book["headers"],
    )

    assert cancel.status_code == 200
    assert (await _book(client, book, at(0), at(30))).status_code == 201


async def test_concurrent_overlapping_bookings_exactly_one_wins(client, book, superuser_engine):
    """The exclusion constraint decides, not a read-then-write check in the service."""
    attempts = 8
    responses = await asyncio.gather(
        *(_book(client, book, at(i), at(i + 30)) for i in range(attempts))
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (attempts - 1), [r.text for r in responses]
    async with superuser_engine.connect() as connection:
        stored = await connection.scalar(text("SELECT count(*) FROM appointments"))
    assert stored == 1


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (["confirmed", "checked_in", "in_exam", "completed"], True),
        (["checked_in", "in_exam", "completed"], True),
        (["confirmed", "no_show"], True),
        (["in_exam"], False),
        (["completed"], False),
        (["cancelled", "confirmed"], False),
        (["confirmed", "checked_in", "in_exam", "cancelled"], False),
    ],
)
async def test_status_follows_the_flow(client, book, path, allowed):
    appointment = (await _book(client, book, at(0), at(30))).json()
    last = None
    for status in path:
        last = await client.post(
            f"/api/v1/appointments/{appointment['id']}/status",
            json={"status": status},
            headers=book["headers"],
        )
        if last.status_code != 200:
            break
    assert (last.status_code == 200) is allowed, last.text
    if not allowed:
        assert last.status_code == 409
        assert last.headers["content-type"] == PROBLEM_JSON


async def test_reschedule_checks_overlaps_and_order(client, book):
    first = (await _book(client, book, at(0), at(30))).json()
    second = (await _book(client, book, at(60), at(90))).json()
    url = f"/api/v1/appointments/{second['id']}"

    onto_first = await client.patch(
        url, json={"starts_at": at(20), "ends_at": at(50)}, headers=book["headers"]
    )
    backwards = await client.patch(url, json={"ends_at": at(30)}, headers=book["headers"])
    later = await client.patch(
        url, json={"starts_at": at(120), "ends_at": at(150)}, headers=book["headers"]
    )

    assert onto_first.status_code == 409
    assert backwards.status_code == 422
    assert later.status_code == 200
    assert dt.datetime.fromisoformat(later.json()["starts_at"]) == START + dt.timedelta(minutes=120)
    assert first["id"] != second["id"]


async def test_moving_to_another_vet_or_room_checks_them_and_their_book(client, book, world):
    clinic = book["clinic"]
    async with world.session(clinic.id) as session:
        other_vet = (
            await add_member(session, await create(session, UserFactory), Role.vet)
        ).user_id
    other_room = await world.make(clinic, RoomFactory, location_id=clinic.setup.location.id)
    elsewhere = await world.clinic(roles=())
    foreign = await world.make(elsewhere, RoomFactory, location_id=elsewhere.setup.location.id)
    busy = (await _book(client, book, at(0), at(30), vet_id=str(other_vet))).json()
    moving = (await _book(client, book, at(0), at(30), room_id=book["room_id"])).json()
    url = f"/api/v1/appointments/{moving['id']}"

    onto_a_busy_vet = await client.patch(
        url, json={"vet_id": str(other_vet)}, headers=book["headers"]
    )
    to_a_foreign_room = await client.patch(
        url, json={"room_id": str(foreign.id)}, headers=book["headers"]
    )
    moved = await client.patch(url, json={"room_id": str(other_room.id)}, headers=book["headers"])

    assert onto_a_busy_vet.status_code == 409, onto_a_busy_vet.text
    assert_problem(to_a_foreign_room, 422, "validation-error")
    assert [e["loc"] for e in to_a_foreign_room.json()["errors"]] == [["body", "room_id"]]
    assert moved.status_code == 200, moved.text
    got = (await client.get(url, headers=book["headers"])).json()
    assert (got["vet_id"], got["room_id"]) == (book["vet_id"], str(other_room.id))
    assert busy["vet_id"] == str(other_vet)


async def test_completed_appointments_cannot_be_rescheduled(client, book):
    appointment = (await _book(client, book, at(0), at(30))).json()
    for status in ("checked_in", "in_exam", "completed"):
        await client.post(
            f"/api/v1/appointments/{appointment['id']}/status",
            json={"status": status},
            headers=book["headers"],
        )
    response = await client.patch(
        f"/api/v1/appointments/{appointment['id']}", json={"reason": "x"}, headers=book["headers"]
    )
    assert response.status_code == 409


async def test_end_before_start_is_rejected(client, book):
    response = await _book(client, book, at(30), at(0))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "ends_at"]


async def test_a_time_beyond_the_horizon_is_refused_by_field_and_books_nothing(
    client, book, settings, superuser_engine
):
    """Starts and ends further than VETIFY_APPOINTMENT_HORIZON_DAYS from now, either way."""
    far = settings.appointment_horizon + dt.timedelta(days=1)
    now = utcnow()
    cases = {
        "starts_at": ((now + far).isoformat(), None),
        "ends_at": ((now + far - dt.timedelta(days=1)).isoformat(), (now + far).isoformat()),
    }
    for field, (start, end) in cases.items():
        response = await _book(client, book, start, end)
        assert_problem(response, 422, "validation-error")
        assert [e["loc"] for e in response.json()["errors"]] == [["body", field]], field
    refused = await _book(client, book, (now - far).isoformat())
    assert_problem(refused, 422, "validation-error")

    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM appointments")) == 0


async def test_booking_with_someone_who_is_not_staff_is_rejected(client, book, world):
    other = await world.clinic(roles=(Role.vet,))
    stranger = {**book, "vet_id": str(other.setup.staff[Role.vet].id)}
    response = await _book(client, stranger, at(0), at(30))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "vet_id"]


async def test_list_filters_by_day_vet_and_status(client, book):
    clinic = book["clinic"]
    owner_vet = {**book, "vet_id": str(clinic.setup.staff[Role.owner].id)}
    a = (await _book(client, book, at(0), at(30))).json()
    b = (await _book(client, owner_vet, at(0), at(30))).json()
    c = (await _book(client, book, at(24 * 60), at(24 * 60 + 30))).json()
    await client.post(
        f"/api/v1/appointments/{b['id']}/status",
        json={"status": "confirmed"},
        headers=book["headers"],
    )

    async def ids(**params):
        response = await client.get("/api/v1/appointments", params=params, headers=book["headers"])
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    # The clinic is in Europe/Lisbon (UTC+0 in March): START's day holds a and b.
    assert set(await ids(day=START.date().isoformat())) == {a["id"], b["id"]}
    assert await ids(vet_id=book["vet_id"]) == [a["id"], c["id"]]
    assert await ids(status="confirmed") == [b["id"]]
    next_day = (START + dt.timedelta(days=1)).date().isoformat()
    assert await ids(day=next_day, vet_id=book["vet_id"]) == [c["id"]]


async def test_appointment_types_crud_and_permissions(client, book):
    clinic = book["clinic"]
    owner = clinic.owner.headers
    created = await client.post(
        "/api/v1/appointment-types",
        json={"name": "Dental", "default_duration_minutes": 45},
        headers=owner,
    )
    assert created.status_code == 201
    type_id = created.json()["id"]
    changed = await client.patch(
        f"/api/v1/appointment-types/{type_id}", json={"default_duration_minutes": 60}, headers=owner
    )
    assert changed.json()["default_duration_minutes"] == 60
    assert (
        await client.get(f"/api/v1/appointment-types/{type_id}", headers=owner)
    ).status_code == 200
    listed = await client.get("/api/v1/appointment-types", headers=owner)
    assert type_id in {t["id"] for t in listed.json()["items"]}
    refused = await client.post(
        "/api/v1/appointment-types",
        json={"name": "X", "default_duration_minutes": 10},
        headers=book["headers"],
    )
    assert refused.status_code == 403
