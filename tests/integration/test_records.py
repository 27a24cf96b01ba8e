from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from app.auth.models import Role
from app.records.models import MedicalRecord
from fixtures.factories import (
    AppointmentFactory,
    CustomerFactory,
    PetFactory,
    PrescriptionFactory,
    create_record,
)
from tests.harness.api import PROBLEM_JSON, assert_problem

NOTE = {
    "subjective": "Limping on the left hind leg for two days.",
    "objective": "Pain on palpation of the left stifle.",
    "assessment": "Suspected cranial cruciate ligament strain.",
    "plan": "Rest, NSAIDs, recheck in 7 days.",
    "weight_kg": 31.5,
    "temperature_c": 38.7,
    "heart_rate_bpm": 92,
    "vaccinations": [
        {
            "vaccine": "Rabies",
            "lot": "RB-2291",
            "expiry_date": "2026-01-31",
            "given_at": "2025-03-04T10:00:00Z",
            "next_due": "2026-03-04",
        }
    ],
    "prescriptions": [
        {
            "drug": "Meloxicam 1.5 mg/ml",
            "dose": "0.1 mg/kg",
            "frequency": "once daily",
            "duration_days": 7,
        }
    ],
}


@pytest.fixture
async def clinic(world):
    return await world.clinic()


@pytest.fixture
async def pet(world, clinic):
    customer = await world.make(clinic, CustomerFactory)
    return await world.make(clinic, PetFactory, customer_id=customer.id)


def headers(clinic, role):
    return clinic.actors[role].headers


async def _write(client, clinic, pet, role=Role.vet, **changes):
    return await client.post(
        "/api/v1/medical-records",
        json={"pet_id": str(pet.id), **NOTE, **changes},
        headers=headers(clinic, role),
    )


async def test_a_vet_writes_a_soap_record_with_vitals_vaccinations_and_prescriptions(
    client, clinic, pet
):
    response = await _write(client, clinic, pet)

    assert response.status_code == 201, response.text
    record = response.json()
    assert record["assessment"] == NOTE["assessment"]
    assert record["weight_kg"] == 31.5
    assert [v["vaccine"] for v in record["vaccinations"]] == ["Rabies"]
    assert record["prescriptions"][0]["duration_days"] == 7
    assert record["author_id"] == str(clinic.setup.staff[Role.vet].id)
    assert record["signed_at"] is None
    assert record["locked"] is False
    listed = await client.get(
        "/api/v1/medical-records", params={"pet_id": str(pet.id)}, headers=headers(clinic, Role.vet)
    )
    assert [r["id"] for r in listed.json()["items"]] == [record["id"]]


@pytest.mark.parametrize("role", [Role.receptionist, Role.read_only, Role.admin])
async def test_non_clinical_roles_cannot_write_notes(client, clinic, pet, superuser_engine, role):
    response = await _write(client, clinic, pet, role=role)

    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM_JSON
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM medical_records")) == 0


async def test_a_receptionist_can_read_records(client, clinic, pet):
    record = (await _write(client, clinic, pet)).json()
    response = await client.get(
        f"/api/v1/medical-records/{record['id']}", headers=headers(clinic, Role.receptionist)
    )
    assert response.status_code == 200


async def test_only_a_vet_signs_and_only_once(client, clinic, pet):
    record = (await _write(client, clinic, pet, role=Role.technician)).json()
    url = f"/api/v1/medical-records/{record['id']}/sign"

    by_technician = await client.post(url, headers=headers(clinic, Role.technician))
    by_vet = await client.post(url, headers=headers(clinic, Role.vet))
    twice = await client.post(url, headers=headers(clinic, Role.vet))

    assert by_technician.status_code == 403
    assert by_vet.status_code == 200
    signed = by_vet.json()
    assert signed["signed_by"] == str(clinic.setup.staff[Role.vet].id)
    locks_at = dt.datetime.fromisoformat(signed["locks_at"])
    assert locks_at - dt.datetime.fromisoformat(signed["signed_at"]) == dt.timedelta(hours=24)
    assert twice.status_code == 409


async def test_a_signed_record_can_be_corrected_within_24_hours(client, clinic, pet):
    record = (await _write(client, clinic, pet)).json()
    await client.post(
        f"/api/v1/medical-records/{record['id']}/sign", headers=headers(clinic, Role.vet)
    )

    fixed = await client.patch(
        f"/api/v1/medical-records/{record['id']}",
        json={"plan": "Rest, NSAIDs, recheck in 5 days.", "prescriptions": []},
        headers=headers(clinic, Role.vet),
    )

    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["plan"] == "Rest, NSAIDs, recheck in 5 days."
    assert fixed.json()["prescriptions"] == []
    assert [v["vaccine"] for v in fixed.json()["vaccinations"]] == ["Rabies"]


async def test_a_correction_replaces_vitals_and_vaccinations_and_keeps_the_rest(
    client, clinic, pet
):
    record = (await _write(client, clinic, pet)).json()
    booster = {"vaccine": "Leptospirosis", "given_at": "2025-03-05T09:00:00Z"}
    url = f"/api/v1/medical-records/{record['id']}"

    fixed = await client.patch(
        url,
        json={"weight_kg": 30.9, "heart_rate_bpm": 88, "vaccinations": [booster]},
        headers=headers(clinic, Role.vet),
    )
    read = await client.get(url, headers=headers(clinic, Role.vet))

    assert fixed.status_code == 200, fixed.text
    assert read.json() == fixed.json()
    assert (read.json()["weight_kg"], read.json()["heart_rate_bpm"]) == (30.9, 88)
    assert read.json()["temperature_c"] == NOTE["temperature_c"]
    assert [v["vaccine"] for v in read.json()["vaccinations"]] == ["Leptospirosis"]
    assert [p["drug"] for p in read.json()["prescriptions"]] == ["Meloxicam 1.5 mg/ml"]
    assert read.json()["plan"] == NOTE["plan"]


async def test_a_record_written_for_a_visit_must_be_for_the_visits_pet(
    client, world, clinic, pet, superuser_engine
):
    other_pet = await world.make(clinic, PetFactory, customer_id=pet.customer_id)
    vet_id = clinic.setup.staff[Role.vet].id
    visit = await world.make(clinic, AppointmentFactory, pet_id=pet.id, vet_id=vet_id)

    refused = await _write(client, clinic, other_pet, appointment_id=str(visit.id))
    written = await _write(client, clinic, pet, appointment_id=str(visit.id))

    assert_problem(refused, 409, "conflict")
    assert written.status_code == 201, written.text
    assert written.json()["appointment_id"] == str(visit.id)
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM medical_records")) == 1


async def test_a_correction_that_repeats_the_notes_leaves_them_sealed_as_they_were(
    client, clinic, pet, superuser_engine
):
    record = (await _write(client, clinic, pet)).json()

    async def sealed() -> bytes:
        async with superuser_engine.connect() as connection:
            return await connection.scalar(
                text("SELECT notes_sealed FROM medical_records WHERE id = :id"),
                {"id": record["id"]},
            )

    before = await sealed()
    same = await client.patch(
        f"/api/v1/medical-records/{record['id']}",
        json={"plan": NOTE["plan"], "subjective": NOTE["subjective"]},
        headers=headers(clinic, Role.vet),
    )

    assert same.status_code == 200, same.text
    assert same.json()["plan"] == NOTE["plan"]
    assert await sealed() == before


async def _locked_record(world, clinic, pet):
    """A record signed 25 hours ago. Written unlocked first: once locked, nothing can be added."""
    vet = clinic.setup.staff[Role.vet]
    signed = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
    record = await world.made(
        clinic,
        create_record,
        pet_id=pet.id,
        author_id=vet.id,
        signed_by=vet.id,
        signed_at=signed,
        assessment="Original assessment",
        prescriptions=[PrescriptionFactory.build()],
    )
    async with world.session(clinic.id) as session:
        await session.execute(
            update(MedicalRecord)
            .where(MedicalRecord.id == record.id)
            .values(locks_at=signed + dt.timedelta(hours=24))
        )
    return record


async def test_a_locked_record_refuses_changes_and_keeps_its_text(client, world, clinic, pet):
    record = await _locked_record(world, clinic, pet)
    url = f"/api/v1/medical-records/{record.id}"

    change = await client.patch(
        url, json={"assessment": "Rewritten"}, headers=headers(clinic, Role.vet)
    )
    addendum = await client.post(
        f"{url}/addenda",
        json={"text": "Radiographs later showed a partial tear."},
        headers=headers(clinic, Role.vet),
    )

    assert_problem(change, 409, "record-locked")
    assert addendum.status_code == 201
    body = addendum.json()
    assert body["assessment"] == "Original assessment"
    assert body["locked"] is True
    assert [a["text"] for a in body["addenda"]] == ["Radiographs later showed a partial tear."]


async def test_the_database_refuses_changes_to_a_locked_record(world, clinic, pet, app_engine):
    """Even a write that skips the service's check is stopped by the trigger."""
    record = await _locked_record(world, clinic, pet)
    for statement in (
        "UPDATE medical_records SET notes_sealed = NULL WHERE id = :id",
        "UPDATE medical_records SET weight_kg = 1 WHERE id = :id",
        "DELETE FROM prescriptions WHERE record_id = :id",
        "INSERT INTO vaccinations (id, tenant_id, record_id, vaccine, given_at)"
        " VALUES (gen_random_uuid(), :tenant, :id, 'Backdated', now())",
    ):
        async with app_engine.connect() as connection:
            await connection.begin()
            await connection.execute(
                text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(clinic.id)}
            )
            with pytest.raises(DBAPIError, match="locked"):
                await connection.execute(text(statement), {"id": record.id, "tenant": clinic.id})
            await connection.rollback()


async def test_a_record_must_be_for_a_pet_of_this_clinic(client, world, clinic):
    other = await world.clinic(roles=())
    customer = await world.make(other, CustomerFactory)
    foreign_pet = await world.make(other, PetFactory, customer_id=customer.id)

    response = await _write(client, clinic, foreign_pet)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "pet_id"]


@pytest.mark.parametrize(
    "change",
    [
        {"temperature_c": 99},
        {"heart_rate_bpm": False},
        {"weight_kg": "31"},
        {"vaccinations": [{"vaccine": "Rabies", "given_at": "yesterday"}]},
        {"signed_by": "01900000-0000-7000-8000-000000000000"},
        {"locks_at": None},
    ],
)
async def test_invalid_or_protected_fields_are_rejected(client, clinic, pet, change):
    response = await _write(client, clinic, pet, **change)
    assert response.status_code == 422
