from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.audit import trail
from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, paginate
from app.kit.problems import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, responses
from app.records import service
from app.records.models import MedicalRecord
from app.records.schemas import AddendumIn, RecordIn, RecordOut, RecordPatch

router = APIRouter(prefix="/api/v1/medical-records", tags=["medical records"])
Reader = Annotated[Principal, Depends(requires(Action.records_read))]
Writer = Annotated[Principal, Depends(requires(Action.records_write))]
Signer = Annotated[Principal, Depends(requires(Action.records_sign))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)
CHANGE = responses(
    Unauthenticated, Forbidden, NotFound, Conflict, service.RecordLocked, InvalidInput
)


@router.get("", responses=READ, summary="Medical records, by pet")
async def list_records(
    caller: Reader,
    session: DbSession,
    pet_id: Annotated[uuid.UUID | None, Query()] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[RecordOut]:
    rows, next_cursor = await paginate(
        session, service.search(caller, pet_id), [MedicalRecord.id], cursor, limit
    )
    return Page[RecordOut](
        items=[await service.to_out(session, caller, r) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses=responses(Unauthenticated, Forbidden, Conflict, InvalidInput),
    summary="Write a visit record",
)
async def create_record(body: RecordIn, caller: Writer, session: DbSession) -> RecordOut:
    return await service.to_out(
        session, caller, await service.create(session, caller, body, caller.user_id)
    )


@router.get("/{record_id}", responses=ONE, summary="One medical record with its addenda")
async def get_record(record_id: uuid.UUID, caller: Reader, session: DbSession) -> RecordOut:
    record = await service.get(session, caller, record_id)
    trail.read(session, record)  # who opened which record is part of the clinic's trail
    return await service.to_out(session, caller, record)


@router.patch("/{record_id}", responses=CHANGE, summary="Correct a record that has not locked yet")
async def update_record(
    record_id: uuid.UUID, body: RecordPatch, caller: Writer, session: DbSession
) -> RecordOut:
    return await service.to_out(
        session, caller, await service.update(session, caller, record_id, body)
    )


@router.post(
    "/{record_id}/sign",
    responses=responses(Unauthenticated, Forbidden, NotFound, Conflict, InvalidInput),
    summary="Sign the record as its vet; it locks 24 hours later",
)
async def sign_record(record_id: uuid.UUID, caller: Signer, session: DbSession) -> RecordOut:
    return await service.to_out(
        session, caller, await service.sign(session, caller, record_id, caller.user_id)
    )


@router.post(
    "/{record_id}/addenda",
    status_code=status.HTTP_201_CREATED,
    responses=ONE,
    summary="Amend a record; the original text is kept",
)
async def add_addendum(
    record_id: uuid.UUID, body: AddendumIn, caller: Writer, session: DbSession
) -> RecordOut:
    return await service.to_out(
        session,
        caller,
        await service.add_addendum(session, caller, record_id, body, caller.user_id),
    )
