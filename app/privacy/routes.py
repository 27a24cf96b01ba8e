from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, BackgroundTasks, Depends, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.background import BackgroundTask

from app.audit import trail
from app.auth.deps import AppSettings, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.customers import service as customers
from app.db.session import DbSession
from app.kit.downloads import WholeDownload, download_headers
from app.kit.problems import Forbidden, InvalidInput, NotFound, Unauthenticated, responses
from app.kit.storage import Storage, Store, discard
from app.privacy import exports, service
from app.privacy.models import ClientExport
from app.privacy.schemas import ClinicExportOut, ErasureOut, ExportOut, LegalHoldIn

router = APIRouter(prefix="/api/v1", tags=["privacy"])
Officer = Annotated[Principal, Depends(requires(Action.customers_privacy))]
Owner = Annotated[Principal, Depends(requires(Action.clinic_export))]
REFUSED = (Unauthenticated, Forbidden, NotFound, customers.CustomerErased, InvalidInput)
CUSTOMER = "/customers/{customer_id}"
EXPORT = "/client-exports/{export_id}"
CLINIC_EXPORT = "/clinic-exports/{clinic_export_id}"


@router.post(
    f"{CUSTOMER}/erase",
    responses=responses(*REFUSED, customers.LegalHold),
    summary="Erase a pet owner's personal data (right to erasure)",
    description="Names, contact details and address are erased and consent withdrawn; upcoming"
    " appointments of their pets are cancelled, and exports not yet downloaded expire. Their"
    " pets and medical records stay, as the clinic must keep them, with the owner no longer"
    " identifiable. Refused while a legal hold is set, and once done (it cannot be undone).",
)
async def erase_customer(
    customer_id: uuid.UUID,
    caller: Officer,
    session: DbSession,
    storage: Store,
    background: BackgroundTasks,
) -> ErasureOut:
    report, files = await service.erase(session, caller, customer_id, caller.user_id)
    for key in files:  # after the response, so after the commit
        background.add_task(storage.delete, key)
    return report


@router.put(
    f"{CUSTOMER}/legal-hold",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*REFUSED),
    summary="Put a pet owner's data under a legal hold (erasure refused until lifted)",
)
async def hold_customer(
    customer_id: uuid.UUID, body: LegalHoldIn, caller: Officer, session: DbSession
) -> None:
    await service.hold(session, caller, customer_id, body.reason)


@router.delete(
    f"{CUSTOMER}/legal-hold",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(*REFUSED),
    summary="Lift a legal hold",
)
async def lift_customer_hold(customer_id: uuid.UUID, caller: Officer, session: DbSession) -> None:
    await service.lift_hold(session, caller, customer_id)


@router.post(
    f"{CUSTOMER}/export",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(*REFUSED),
    summary="Export a pet owner's data as one archive (rights of access and portability)",
    description="A job builds a zip of the client as the API shows them, their consent"
    " history, pets, weights, appointments, medical records and attachments, with a manifest"
    " of every file's SHA-256. Follow the export's status; once `ready`, download it once,"
    " before `expires_at`.",
)
async def export_customer(
    customer_id: uuid.UUID, caller: Officer, session: DbSession, settings: AppSettings
) -> ExportOut:
    valid = dt.timedelta(hours=settings.export_valid_hours)
    return _out(await exports.request(session, caller, customer_id, caller.user_id, valid))


@router.get(EXPORT, responses=responses(Unauthenticated, Forbidden, NotFound, InvalidInput))
async def get_client_export(export_id: uuid.UUID, caller: Officer, session: DbSession) -> ExportOut:
    """A client's export: its status, and when it expires."""
    return _out(await exports.get(session, caller, export_id))


DOWNLOAD_RESPONSES = {
    200: {
        "description": "The archive (a zip), whole and once (no ranges): it is deleted when sent",
        "content": {exports.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Content-Disposition": {"schema": {"type": "string"}},
            "Repr-Digest": {"schema": {"type": "string"}},
        },
    },
    **responses(
        Unauthenticated,
        Forbidden,
        NotFound,
        exports.ExportNotReady,
        exports.ExportGone,
        exports.ExportCorrupted,
        InvalidInput,
    ),
}


@router.get(
    f"{EXPORT}/content",
    response_class=Response,
    responses=DOWNLOAD_RESPONSES,
    summary="Download a client's export (once)",
)
async def download_client_export(
    export_id: uuid.UUID, caller: Officer, session: DbSession, storage: Store
) -> Response:
    export = await exports.take(session, caller, export_id)
    return await _download(session, caller, storage, export, f"client-{export.customer_id}.zip")


@router.post(
    "/clinics/current/export",
    status_code=status.HTTP_202_ACCEPTED,
    responses=responses(Unauthenticated, Forbidden, InvalidInput),
    summary="Export the whole clinic as one archive (the owner's, e.g. when it leaves)",
    description="A job builds a zip of every table of the clinic's as JSON Lines (sealed values"
    " opened; credentials' hashes, blind indexes and storage keys left out), its staff, and"
    " every attachment's file, with a manifest of every file's SHA-256. Allowed whether or not"
    " the subscription is paid. Follow the export's status; once `ready`, download it once,"
    " before `expires_at`.",
)
async def export_clinic(
    caller: Owner, session: DbSession, settings: AppSettings
) -> ClinicExportOut:
    valid = dt.timedelta(hours=settings.export_valid_hours)
    export = await exports.request(session, caller, None, caller.user_id, valid)
    return ClinicExportOut.model_validate(export)


@router.get(CLINIC_EXPORT, responses=responses(Unauthenticated, Forbidden, NotFound, InvalidInput))
async def get_clinic_export(
    clinic_export_id: uuid.UUID, caller: Owner, session: DbSession
) -> ClinicExportOut:
    """The whole clinic's export: its status, and when it expires."""
    export = await exports.get(session, caller, clinic_export_id, whole=True)
    return ClinicExportOut.model_validate(export)


@router.get(
    f"{CLINIC_EXPORT}/content",
    response_class=Response,
    responses=DOWNLOAD_RESPONSES,
    summary="Download the whole clinic's export (once)",
)
async def download_clinic_export(
    clinic_export_id: uuid.UUID, caller: Owner, session: DbSession, storage: Store
) -> Response:
    export = await exports.take(session, caller, clinic_export_id, whole=True)
    return await _download(session, caller, storage, export, f"clinic-{caller.clinic_id}.zip")


async def _download(
    session: AsyncSession, caller: Principal, storage: Storage, export: ClientExport, name: str
) -> Response:
    archive = await exports.opened(session, caller, storage, export)
    trail.read(session, export)  # who took which data away is part of the trail
    return WholeDownload(
        archive,
        media_type=exports.MEDIA_TYPE,
        headers=download_headers(name, export.sha256),
        background=BackgroundTask(_sent, storage, archive, exports.file_key(export)),
        stat_result=await to_thread.run_sync(os.stat, archive),
    )


async def _sent(storage: Storage, archive: Path, key: str) -> None:
    await discard(archive)
    await storage.delete(key)


def _out(export: ClientExport) -> ExportOut:
    return ExportOut.model_validate(export)
