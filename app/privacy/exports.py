"""A client's data as one archive: the rights of access and portability (GDPR arts. 15 and 20;
ADR 0030).

* **Asked for** (:func:`request`): the export's row, pending, and the job that builds it, in the
  request's transaction.
* **Built** by that job (:func:`build`): the client as the API shows them, and everything the
  clinic holds about them and their animals (consent history, pets, weights, appointments,
  medical records, attachments' files), as JSON files and the files themselves in a zip with a
  manifest of each file's size and SHA-256. The zip is sealed with the clinic's data key as a
  stream of AES-GCM segments bound to the export's id, stored, and the row says ``ready`` until
  ``expires_at`` (``VETIFY_EXPORT_VALID_HOURS``), when a scheduled job deletes the file.
* **Downloaded once** (:func:`take`): the row goes from ``ready`` to ``downloaded`` under its
  lock, the download is a ``read`` of it in the clinic's trail, and the file is deleted once
  sent. A second download, or one after expiry, is ``410 export-gone``.

An erased client's exports not yet downloaded expire with the erasure (:func:`withdraw`).

The whole clinic's export (no ``customer_id``; its owner's, when the clinic leaves: ADR 0036) is
the same row, job, sealing, single download and expiry; only its contents differ
(:mod:`app.privacy.archive`), and each kind is found only through its own routes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from anyio import to_thread
from pydantic_core import to_jsonable_python
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from app.appointments import service as appointments
from app.appointments.models import Appointment
from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.clinics.models import Clinic
from app.customers import service as customers
from app.customers.models import ConsentEvent, Customer
from app.db.base import Entity
from app.db.repository import belongs_to, find, get_or_404, of_clinic
from app.db.tenancy import Tenant, enter_tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit import sealing
from app.kit.clock import utcnow
from app.kit.problems import Conflict, NotFound, Problem
from app.kit.sealing import Unreadable
from app.kit.storage import ObjectMissing, Storage, discard, new_key, staging_file
from app.pets import service as pets
from app.pets.models import Pet, WeightMeasurement
from app.privacy import archive as archive_of_clinic
from app.privacy.models import ClientExport, ExportStatus
from app.queue import enqueue
from app.records import service as records
from app.records.models import MedicalRecord

log = logging.getLogger("vetify.privacy")

BUILD = "privacy.build_export"
EXPIRE = "privacy.expire_export"
SEALED_AS = "client_exports"
"""What a sealed archive is bound to, with the clinic and the export's id."""
FORMAT = "vetify-client-export/1"
MEDIA_TYPE = "application/zip"
MANIFEST = "manifest.json"

rotation.seals_files(
    rotation.SealedFiles("client_exports", SEALED_AS, "status = 'ready'", clear_before=False)
)


class ExportNotReady(Conflict):
    slug, title = "export-not-ready", "Export not ready"

    def __init__(self) -> None:
        super().__init__("The export is still being built; ask for its status and try again.")


class ExportGone(Problem):
    status, slug, title = 410, "export-gone", "Export gone"

    def __init__(self, why: str) -> None:
        super().__init__(f"The export {why}; ask for a new one.")


class ExportCorrupted(Problem):
    """The stored file does not open as this export's (altered, moved, or its key shredded),
    or is gone from storage: nothing is served, and the export stays as it was."""

    status, slug, title = 502, "export-corrupted", "Export corrupted in storage"


def scope(tenant: Tenant) -> str:
    return str(tenant.clinic_id)


async def request(
    session: AsyncSession,
    tenant: Tenant,
    customer_id: uuid.UUID | None,
    by: uuid.UUID,
    valid: dt.timedelta,
) -> ClientExport:
    """A client's export asked for, or (``customer_id`` None) the whole clinic's."""
    if customer_id is not None:
        # Under the customer's lock: an erasure under way finishes first (and this is refused).
        customer_id = (await customers.get_to_change(session, tenant, customer_id)).id
    export = ClientExport(
        tenant_id=tenant.clinic_id,
        customer_id=customer_id,
        requested_by=by,
        expires_at=utcnow() + valid,
    )
    session.add(export)
    await session.flush()
    await enqueue(session, BUILD, clinic_id=str(tenant.clinic_id), export_id=str(export.id))
    return export


async def get(
    session: AsyncSession,
    tenant: Tenant,
    export_id: uuid.UUID,
    *,
    whole: bool = False,
    lock: bool = False,
) -> ClientExport:
    """A client's export, or (``whole``) the clinic's: neither is found as the other (a manager
    takes a client's, only the owner the whole clinic's)."""
    export = await find(session, tenant, ClientExport, export_id, lock=lock)
    if export is None or (export.customer_id is None) != whole:
        raise NotFound("No export with this id.")
    return export


async def build(
    sessions: async_sessionmaker[AsyncSession],
    tenant: Tenant,
    storage: Storage,
    export_id: uuid.UUID,
    valid: dt.timedelta,
) -> bool:
    """The export built, sealed and stored, if it is still pending (False: nothing to do). The
    stored file's deletion is scheduled for when it expires.

    In three steps, so that no transaction waits on the longest part: the archive written from
    the database (a transaction of reads); sealed and stored (none); the export made ready (a
    short one, which finds it no longer pending if its client was erased meanwhile: the file
    then goes at once)."""
    archive = await to_thread.run_sync(staging_file, storage)
    sealed = await to_thread.run_sync(staging_file, storage)
    try:
        async with sessions() as session, session.begin():
            await enter_tenant(session, tenant.clinic_id)
            export = await find(session, tenant, ClientExport, export_id)
            if export is None or export.status is not ExportStatus.pending:
                return False
            if export.customer_id is None:
                await archive_of_clinic.write(session, tenant, storage, archive)
            else:
                await _write_client(session, tenant, storage, export, export.customer_id, archive)
            version, key = await keys.current_key(session, scope(tenant))
        digest, size = await to_thread.run_sync(_digest, archive)
        aad = sealing.file_aad(scope(tenant), SEALED_AS, export_id)
        await to_thread.run_sync(sealing.seal_file, key, version, archive, sealed, aad)
        stored = new_key(tenant.clinic_id)
        await storage.put(stored, sealed)
    finally:
        for path in (archive, sealed):
            await discard(path)
    async with sessions() as session, session.begin():
        await enter_tenant(session, tenant.clinic_id)
        export = await find(session, tenant, ClientExport, export_id, lock=True)
        if export is not None and export.status is ExportStatus.pending:
            now = utcnow()
            export.status, export.ready_at, export.expires_at = ExportStatus.ready, now, now + valid
            export.storage_key, export.size_bytes, export.sha256 = stored, size, digest
            export.sealed_with = version
            await session.flush()
            await enqueue(
                session,
                EXPIRE,
                schedule_at=export.expires_at,
                clinic_id=str(tenant.clinic_id),
                export_id=str(export.id),
                storage_key=stored,
            )
            return True
    await storage.delete(stored)  # withdrawn while it was being built
    return False


async def _write_client(
    session: AsyncSession,
    tenant: Tenant,
    storage: Storage,
    export: ClientExport,
    customer_id: uuid.UUID,
    archive: Path,
) -> None:
    copies: list[Path] = []  # the attachments' plaintext copies: gone whatever happens
    try:
        contents = await _contents(session, tenant, storage, export, customer_id, copies)
        await to_thread.run_sync(_write_zip, archive, contents)
    finally:
        for path in copies:
            await discard(path)


async def failed(session: AsyncSession, tenant: Tenant, export_id: uuid.UUID) -> None:
    """The build gave up (its last try failed): the export says so rather than stay pending
    (unless it is no longer pending: its client erased meanwhile)."""
    pending = await session.scalars(
        of_clinic(tenant, ClientExport)
        .where(ClientExport.id == export_id, ClientExport.status == ExportStatus.pending)
        .with_for_update()
    )
    for export in pending:
        export.status = ExportStatus.failed
    await session.flush()


async def take(
    session: AsyncSession, tenant: Tenant, export_id: uuid.UUID, *, whole: bool = False
) -> ClientExport:
    """The ready export, marked downloaded (in this transaction): it is served once."""
    export = await get(session, tenant, export_id, whole=whole, lock=True)
    now = utcnow()
    if export.status is ExportStatus.pending:
        raise ExportNotReady()
    if export.status is not ExportStatus.ready:
        raise ExportGone(f"is {export.status.value}")
    if export.expires_at <= now:
        raise ExportGone("has expired")
    # A statement, not a change of the loaded row: the download is the trail's ``read`` of the
    # export (noted by the route), not an update besides it.
    await session.execute(
        update(ClientExport)
        .where(belongs_to(tenant, ClientExport), ClientExport.id == export.id)
        .values(status=ExportStatus.downloaded, downloaded_at=now)
        .execution_options(synchronize_session=False)
    )
    return export


def file_key(export: ClientExport) -> str:
    """Where a ready (or downloaded) export's sealed file is: the table's check holds that such
    an export has one."""
    return cast(str, export.storage_key)


async def opened(
    session: AsyncSession, tenant: Tenant, storage: Storage, export: ClientExport
) -> Path:
    """A local copy of the export's archive, opened from its sealed file (the caller discards
    it)."""
    sealed = await to_thread.run_sync(staging_file, storage)
    archive = await to_thread.run_sync(staging_file, storage)
    done = False
    try:
        await storage.get(file_key(export), sealed)
        await keys.open_file(session, scope(tenant), SEALED_AS, export.id, sealed, archive)
        done = True
    except (ObjectMissing, Unreadable) as exc:
        log.error("export %s: its stored file does not open (%s)", export.id, exc)
        raise ExportCorrupted("The export's stored file does not open; ask for a new one.") from exc
    finally:
        await discard(sealed)
        if not done:
            await discard(archive)
    return archive


async def expire(session: AsyncSession, tenant: Tenant, export_id: uuid.UUID) -> None:
    """The export's time is up: if it was not downloaded, it says expired (its file goes)."""
    export = await find(session, tenant, ClientExport, export_id, lock=True)
    if export is not None and export.status is ExportStatus.ready:
        export.status = ExportStatus.expired
        await session.flush()


async def withdraw(session: AsyncSession, tenant: Tenant, customer: Customer) -> list[ClientExport]:
    """The client's exports not yet downloaded, expired (their client is being erased); their
    files are for the caller to delete once the transaction commits."""
    waiting = (
        await session.scalars(
            of_clinic(tenant, ClientExport)
            .where(
                ClientExport.customer_id == customer.id,
                ClientExport.status.in_((ExportStatus.pending, ExportStatus.ready)),
            )
            .with_for_update()
        )
    ).all()
    for export in waiting:
        export.status = ExportStatus.expired
    await session.flush()
    return list(waiting)


E = TypeVar("E", bound=Entity)
Contents = dict[str, bytes | Path]
"""A name in the archive -> its bytes, or a local file to copy in."""


async def _contents(
    session: AsyncSession,
    tenant: Tenant,
    storage: Storage,
    export: ClientExport,
    customer_id: uuid.UUID,
    copies: list[Path],
) -> Contents:
    customer = await get_or_404(session, tenant, Customer, customer_id, "customer")
    pet_rows = await _of(session, tenant, Pet, Pet.customer_id, [customer.id])
    pet_ids = [p.id for p in pet_rows]
    record_rows = await _of(session, tenant, MedicalRecord, MedicalRecord.pet_id, pet_ids)
    consents = await _of(session, tenant, ConsentEvent, ConsentEvent.customer_id, [customer.id])
    weights = await _of(session, tenant, WeightMeasurement, WeightMeasurement.pet_id, pet_ids)
    visits = await _of(session, tenant, Appointment, Appointment.pet_id, pet_ids)
    contents: Contents = {
        "customer.json": _json((await customers.to_out(session, tenant, [customer]))[0]),
        "consent-history.json": _json(
            [
                {"channel": e.channel, "granted": e.granted, "recorded_at": e.recorded_at}
                for e in consents
            ]
        ),
        "pets.json": _json(await pets.to_out(session, tenant, pet_rows)),
        "weights.json": _json([pets.weight_out(w) for w in weights]),
        "appointments.json": _json([appointments.to_out(a) for a in visits]),
        "medical-records.json": _json(
            [await records.to_out(session, tenant, r) for r in record_rows]
        ),
    }
    record_ids = [r.id for r in record_rows]
    files = await _of(session, tenant, Attachment, Attachment.record_id, record_ids)
    listed = []
    for attachment in files:
        entry: dict[str, Any] = to_jsonable_python(attachments.to_out(attachment))
        try:
            copy = await attachments.fetch(session, tenant, storage, attachment)
        except (attachments.NotScanned, attachments.Infected, attachments.Corrupted) as refused:
            entry["file"], entry["left_out"] = None, refused.detail
        else:
            copies.append(copy)
            entry["file"] = f"attachments/{attachment.id}/{attachment.filename}"
            contents[entry["file"]] = copy
        listed.append(entry)
    contents["attachments.json"] = _json(listed)
    clinic = (await session.scalars(of_clinic(tenant, Clinic))).one()
    contents[MANIFEST] = _json(
        {
            "format": FORMAT,
            "export_id": str(export.id),
            "clinic": {"id": str(clinic.id), "name": clinic.name},
            "customer_id": str(customer.id),
            "generated_at": utcnow().isoformat(),
        }
    )
    return contents


async def _of(
    session: AsyncSession,
    tenant: Tenant,
    model: type[E],
    column: InstrumentedAttribute[uuid.UUID],
    values: list[uuid.UUID],
) -> Sequence[E]:
    """``model``'s rows of the clinic whose ``column`` is one of ``values``, oldest first."""
    query = of_clinic(tenant, model).where(column.in_(values)).order_by(model.id)
    return (await session.scalars(query)).all()


def _json(value: object) -> bytes:
    """``value`` (response schemas as the API answers them, or plain data) as indented JSON."""
    return json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False).encode()


def _write_zip(archive: Path, contents: Contents) -> None:
    """The archive, with ``manifest.json`` last and listing every other file's size and
    SHA-256 (so that a reader can check what it holds)."""
    head = contents[MANIFEST]
    manifest = json.loads(head if isinstance(head, bytes) else head.read_bytes())
    manifest["files"] = []
    # Stored, not deflated: the attachments are compressed already (images, PDF), and the JSON
    # of one client is small; a reader (or a test) finds its text as written.
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
        for name, content in contents.items():
            if name == MANIFEST:
                continue
            if isinstance(content, Path):
                out.write(content, name)
                digest, size = _digest(content)
            else:
                out.writestr(name, content)
                digest, size = hashlib.sha256(content).hexdigest(), len(content)
            manifest["files"].append({"name": name, "bytes": size, "sha256": digest})
        out.writestr(MANIFEST, _json(manifest))


def _digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
