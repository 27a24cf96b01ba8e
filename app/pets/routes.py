from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, rows_for
from app.kit.problems import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, responses
from app.pets import service
from app.pets.models import Pet, Species
from app.pets.schemas import PetIn, PetOut, PetPatch, PetStored, WeightIn, WeightOut

router = APIRouter(prefix="/api/v1/pets", tags=["pets"])
Reader = Annotated[Principal, Depends(requires(Action.pets_read))]
Writer = Annotated[Principal, Depends(requires(Action.pets_write))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)
WRITE = responses(Unauthenticated, Forbidden, Conflict, InvalidInput)
WRITE_ONE = responses(Unauthenticated, Forbidden, NotFound, Conflict, InvalidInput)


@router.get("", responses=READ, summary="List pets, by owner, species or name/microchip")
async def list_pets(
    caller: Reader,
    session: DbSession,
    customer_id: Annotated[uuid.UUID | None, Query()] = None,
    species: Annotated[Species | None, Query()] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    include_deceased: Annotated[bool, Query()] = False,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[PetOut]:
    query = service.search(caller, customer_id, species, q, include_deceased)
    rows, next_cursor = await rows_for(session, query, PetStored, cursor, limit)
    return Page[PetOut](items=await service.to_out(session, caller, rows), next_cursor=next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED, responses=WRITE, summary="Register a pet")
async def create_pet(body: PetIn, caller: Writer, session: DbSession) -> PetOut:
    return await _out(session, caller, await service.create(session, caller, body))


@router.get("/{pet_id}", responses=ONE, summary="One pet")
async def get_pet(pet_id: uuid.UUID, caller: Reader, session: DbSession) -> PetOut:
    return await _out(session, caller, await get_or_404(session, caller, Pet, pet_id, "pet"))


@router.patch("/{pet_id}", responses=WRITE_ONE, summary="Change a pet")
async def update_pet(
    pet_id: uuid.UUID, body: PetPatch, caller: Writer, session: DbSession
) -> PetOut:
    return await _out(session, caller, await service.update(session, caller, pet_id, body))


@router.delete(
    "/{pet_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=WRITE_ONE,
    summary="Delete a pet registered by mistake (no history)",
)
async def delete_pet(pet_id: uuid.UUID, caller: Writer, session: DbSession) -> None:
    await service.delete(session, caller, pet_id)


@router.get("/{pet_id}/weights", responses=ONE, summary="Weight history, oldest first")
async def list_weights(pet_id: uuid.UUID, caller: Reader, session: DbSession) -> list[WeightOut]:
    return [service.weight_out(w) for w in await service.weights(session, caller, pet_id)]


@router.post(
    "/{pet_id}/weights",
    status_code=status.HTTP_201_CREATED,
    responses=ONE,
    summary="Record a weight",
)
async def add_weight(
    pet_id: uuid.UUID, body: WeightIn, caller: Writer, session: DbSession
) -> WeightOut:
    return service.weight_out(
        await service.add_weight(session, caller, pet_id, body, caller.user_id)
    )


async def _out(session: AsyncSession, caller: Principal, pet: Pet) -> PetOut:
    return (await service.to_out(session, caller, [pet]))[0]
