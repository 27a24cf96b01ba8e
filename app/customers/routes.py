from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.customers import service
from app.customers.models import Customer
from app.customers.schemas import CustomerIn, CustomerOut, CustomerPatch
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page, paginate
from app.kit.problems import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated, responses

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])
Reader = Annotated[Principal, Depends(requires(Action.customers_read))]
Writer = Annotated[Principal, Depends(requires(Action.customers_write))]
READ = responses(Unauthenticated, Forbidden, InvalidInput)
ONE = responses(Unauthenticated, Forbidden, NotFound, InvalidInput)


@router.get("", responses=READ, summary="List or search pet owners")
async def list_customers(
    caller: Reader,
    session: DbSession,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="Part of a name, or a whole email address or phone number",
        ),
    ] = None,
    cursor: CursorParam = None,
    limit: LimitParam = DEFAULT_LIMIT,
) -> Page[CustomerOut]:
    rows, next_cursor = await paginate(
        session, await service.search(session, caller, q), [Customer.id], cursor, limit
    )
    return Page[CustomerOut](
        items=await service.to_out(session, caller, rows), next_cursor=next_cursor
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=READ, summary="Add a pet owner")
async def create_customer(body: CustomerIn, caller: Writer, session: DbSession) -> CustomerOut:
    customer = await service.create(session, caller, body, caller.user_id)
    return (await service.to_out(session, caller, [customer]))[0]


@router.get("/{customer_id}", responses=ONE, summary="One pet owner")
async def get_customer(customer_id: uuid.UUID, caller: Reader, session: DbSession) -> CustomerOut:
    customer = await get_or_404(session, caller, Customer, customer_id, "customer")
    return (await service.to_out(session, caller, [customer]))[0]


@router.patch(
    "/{customer_id}",
    responses=responses(Unauthenticated, Forbidden, NotFound, service.CustomerErased, InvalidInput),
    summary="Change a pet owner's details or consent",
)
async def update_customer(
    customer_id: uuid.UUID, body: CustomerPatch, caller: Writer, session: DbSession
) -> CustomerOut:
    customer = await service.update(session, caller, customer_id, body, caller.user_id)
    return (await service.to_out(session, caller, [customer]))[0]


@router.delete(
    "/{customer_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(
        Unauthenticated, Forbidden, NotFound, Conflict, service.LegalHold, InvalidInput
    ),
    summary="Delete a pet owner who has no pets and is under no legal hold",
)
async def delete_customer(customer_id: uuid.UUID, caller: Writer, session: DbSession) -> None:
    await service.delete(session, caller, customer_id)
