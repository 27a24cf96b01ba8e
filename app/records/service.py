"""Medical records: SOAP notes, vitals, vaccinations, prescriptions; signing, locking, addenda.

The clinical free text is sealed with the clinic's data key (ADR 0033): a record's four SOAP
notes together in ``notes_sealed``, each addendum's text in ``text_sealed``, each bound to its
row; the service opens them when it answers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.appointments.models import Appointment
from app.db.repository import get_or_404, of_clinic, referenced
from app.db.tenancy import Tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.problems import Conflict
from app.pets.models import Pet
from app.records.models import Addendum, MedicalRecord, Prescription, Vaccination
from app.records.schemas import (
    NOTES_FIELDS,
    AddendumIn,
    AddendumOut,
    Notes,
    RecordIn,
    RecordOut,
    RecordPatch,
)

LOCK_AFTER = dt.timedelta(hours=24)
"""A signed record can be corrected for this long; after that only addenda amend it."""
_DECIMALS = ("weight_kg", "temperature_c")
NOTES, ADDENDUM = "medical_records.notes", "record_addenda.text"
"""What a record's sealed notes and an addendum's sealed text are bound to (with clinic, row)."""
rotation.seals(rotation.SealedColumn("medical_records", "notes_sealed", NOTES, "tenant_id"))
rotation.seals(rotation.SealedColumn("record_addenda", "text_sealed", ADDENDUM, "tenant_id"))
NO_NOTES = Notes()


class RecordLocked(Conflict):
    slug, title = "record-locked", "Record locked"

    def __init__(self) -> None:
        super().__init__("The record was signed more than 24 hours ago; add an addendum instead.")


def is_locked(record: MedicalRecord, now: dt.datetime) -> bool:
    return record.locks_at is not None and record.locks_at <= now


async def to_out(session: AsyncSession, tenant: Tenant, record: MedicalRecord) -> RecordOut:
    """The record as the API shows it, its notes and addenda opened."""
    scope = keys.scope_of(session, tenant)
    addenda = [
        AddendumOut(
            id=addendum.id,
            author_id=addendum.author_id,
            text=await keys.unseal(session, scope, ADDENDUM, addendum.id, addendum.text_sealed),
            created_at=addendum.created_at,
        )
        for addendum in record.addenda
    ]
    return RecordOut.model_validate(
        {
            **{c.key: getattr(record, c.key) for c in MedicalRecord.__table__.columns},
            **(await notes_of(session, tenant, record)).model_dump(),
            "locked": is_locked(record, utcnow()),
            "vaccinations": record.vaccinations,
            "prescriptions": record.prescriptions,
            "addenda": addenda,
        }
    )


async def notes_of(session: AsyncSession, tenant: Tenant, record: MedicalRecord) -> Notes:
    """The record's SOAP notes, opened (:class:`~app.kit.sealing.Unreadable` if the sealed
    value is not this row's, or its key was shredded)."""
    if record.notes_sealed is None:
        return NO_NOTES
    scope = keys.scope_of(session, tenant)
    opened = await keys.unseal_bytes(session, scope, NOTES, record.id, record.notes_sealed)
    return Notes.model_validate_json(opened)


async def seal_notes(
    session: AsyncSession, tenant: Tenant, record_id: uuid.UUID, notes: Notes
) -> bytes | None:
    """``notes`` as ``medical_records.notes_sealed`` holds them for this record."""
    if notes == NO_NOTES:
        return None
    plain = notes.model_dump_json(exclude_defaults=True).encode()
    return await keys.seal_bytes(session, keys.scope_of(session, tenant), NOTES, record_id, plain)


async def seal_addendum(
    session: AsyncSession, tenant: Tenant, addendum_id: uuid.UUID, text: str
) -> bytes:
    """``text`` as ``record_addenda.text_sealed`` holds it for this addendum."""
    return await keys.seal(session, keys.scope_of(session, tenant), ADDENDUM, addendum_id, text)


def search(tenant: Tenant, pet_id: uuid.UUID | None) -> Select[MedicalRecord]:
    query = of_clinic(tenant, MedicalRecord)
    return query.where(MedicalRecord.pet_id == pet_id) if pet_id else query


def _columns(data: RecordIn | RecordPatch, *, exclude: set[str]) -> dict[str, Any]:
    values = data.model_dump(exclude_unset=True, exclude=exclude)
    for key in _DECIMALS:
        if values.get(key) is not None:
            values[key] = Decimal(str(values[key]))
    return values


async def create(
    session: AsyncSession, tenant: Tenant, data: RecordIn, author_id: uuid.UUID
) -> MedicalRecord:
    await referenced(session, tenant, Pet, data.pet_id, "pet_id", "pet")
    if data.appointment_id is not None:
        appointment = await referenced(
            session, tenant, Appointment, data.appointment_id, "appointment_id", "appointment"
        )
        if appointment.pet_id != data.pet_id:
            raise Conflict("The appointment is for another pet.")
    record_id = new_id()
    notes = Notes.model_validate(data.model_dump(include=set(NOTES_FIELDS)))
    record = MedicalRecord(
        id=record_id,
        tenant_id=tenant.clinic_id,
        **_columns(data, exclude={"vaccinations", "prescriptions", "visited_at", *NOTES_FIELDS}),
        notes_sealed=await seal_notes(session, tenant, record_id, notes),
        visited_at=data.visited_at or utcnow(),
        author_id=author_id,
        vaccinations=[Vaccination(**v.model_dump()) for v in data.vaccinations],
        prescriptions=[Prescription(**p.model_dump()) for p in data.prescriptions],
        addenda=[],
    )
    session.add(record)
    await session.flush()
    return record


async def get(session: AsyncSession, tenant: Tenant, record_id: uuid.UUID) -> MedicalRecord:
    return await get_or_404(session, tenant, MedicalRecord, record_id, "medical record")


async def guarded_flush(session: AsyncSession) -> None:
    """The database refuses changes to a locked record even if the check above raced the clock."""
    try:
        await session.flush()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55000":
            raise RecordLocked() from exc
        raise


async def update(
    session: AsyncSession, tenant: Tenant, record_id: uuid.UUID, changes: RecordPatch
) -> MedicalRecord:
    record = await get(session, tenant, record_id)
    if is_locked(record, utcnow()):
        raise RecordLocked()
    # The notes are sealed before the row is touched: a query's autoflush would otherwise
    # write it twice (two changes in the trail for one).
    sealed: dict[str, bytes | None] = {}
    if changed := changes.model_dump(exclude_unset=True, include=set(NOTES_FIELDS)):
        notes = await notes_of(session, tenant, record)
        if (wanted := notes.model_copy(update=changed)) != notes:
            sealed["notes_sealed"] = await seal_notes(session, tenant, record.id, wanted)
    exclude = {"vaccinations", "prescriptions", *NOTES_FIELDS}
    for key, value in {**_columns(changes, exclude=exclude), **sealed}.items():
        setattr(record, key, value)
    if "vaccinations" in changes.model_fields_set:
        record.vaccinations = [Vaccination(**v.model_dump()) for v in changes.vaccinations]
    if "prescriptions" in changes.model_fields_set:
        record.prescriptions = [Prescription(**p.model_dump()) for p in changes.prescriptions]
    await guarded_flush(session)
    return await _reloaded(session, record)


async def sign(
    session: AsyncSession, tenant: Tenant, record_id: uuid.UUID, vet_id: uuid.UUID
) -> MedicalRecord:
    record = await get(session, tenant, record_id)
    if record.signed_at is not None:
        raise Conflict("The record is already signed.")
    now = utcnow()
    record.signed_by, record.signed_at, record.locks_at = vet_id, now, now + LOCK_AFTER
    await guarded_flush(session)
    return record


async def add_addendum(
    session: AsyncSession,
    tenant: Tenant,
    record_id: uuid.UUID,
    data: AddendumIn,
    author_id: uuid.UUID,
) -> MedicalRecord:
    record = await get(session, tenant, record_id)
    addendum_id = new_id()
    text = await seal_addendum(session, tenant, addendum_id, data.text)
    session.add(
        Addendum(
            id=addendum_id,
            tenant_id=tenant.clinic_id,
            record_id=record.id,
            author_id=author_id,
            text_sealed=text,
        )
    )
    await session.flush()
    return await _reloaded(session, record)


async def _reloaded(session: AsyncSession, record: MedicalRecord) -> MedicalRecord:
    await session.refresh(record, ["vaccinations", "prescriptions", "addenda", "updated_at"])
    return record
