from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.customers import service as customers
from app.db.session import DbSession
from app.kit.problems import Forbidden, InvalidInput, NotFound, Unauthenticated, responses
from app.privacy import service
from app.privacy.schemas import ErasureOut, LegalHoldIn

router = APIRouter(prefix="/api/v1/customers/{customer_id}", tags=["privacy"])
Officer = Annotated[Principal, Depends(requires(Action.customers_privacy))]
REFUSED = (Unauthenticated, Forbidden, NotFound, customers.CustomerErased, InvalidInput)


@router.post(
    "/erase",
    responses=responses(*REFUSED, service.LegalHold),
    summary="Erase a pet owner's personal data (right to erasure)",
    description="Names, contact details and address are erased and consent withdrawn; upcoming"
    " appointments of their pets are cancelled. Their pets and medical records stay, as the"
    " clinic must keep them, with the owner no longer identifiable. Refused while a legal hold"
    " is set, and once done (it cannot be undone).",
)
async def erase_customer(customer_id: uuid.UUID, caller: Officer, session: DbSession) -> ErasureOut:
    return await service.erase(session, caller, customer_id, caller.user_id)


@router.put(
    "/legal-hold",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*REFUSED),
    summary="Put a pet owner's data under a legal hold (erasure refused until lifted)",
)
async def hold_customer(
    customer_id: uuid.UUID, body: LegalHoldIn, caller: Officer, session: DbSession
) -> None:
    await service.hold(session, caller, customer_id, body.reason)


@router.delete(
    "/legal-hold",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*REFUSED),
    summary="Lift a legal hold",
)
async def lift_customer_hold(customer_id: uuid.UUID, caller: Officer, session: DbSession) -> None:
    await service.lift_hold(session, caller, customer_id)
