"""Attachments of medical records: receive, sniff, store, scan, serve back, delete."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

from anyio import to_thread
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from app.attachments.models import Attachment, ScanStatus
from app.attachments.schemas import AttachmentOut
from app.db.repository import find, get_or_404, of_clinic
from app.db.tenancy import Tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit import clamd, files
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.problems import Conflict, Problem
from app.kit.sealing import Unreadable
from app.kit.storage import ObjectMissing, Storage, discard, new_key, staging_file
from app.kit.uploads import UnsupportedMediaType, receive_file
from app.observability import metrics
from app.queue import enqueue
from app.records import service as records
from app.settings import Settings

log = logging.getLogger("vetify.attachments")

SCAN_PENDING = "attachments.scan_pending"
"""The job (``app.attachments.jobs``) that scans a file the inline scan could not."""
SEALED_AS = "attachments"
"""What a stored file is bound to, with the clinic and the attachment's id (ADR 0034)."""

rotation.seals_files(
    rotation.SealedFiles("attachments", SEALED_AS, "scan_status <> 'infected'", clear_before=True)
)


class NotScanned(Conflict):
    slug, title = "attachment-not-scanned", "Attachment not scanned yet"

    def __init__(self) -> None:
        super().__init__("The file has not been scanned for malware yet; try again later.")


class Infected(Conflict):
    slug, title = "attachment-infected", "Attachment infected"

    def __init__(self, signature: str | None) -> None:
        super().__init__(f"The malware scanner found {signature or 'malware'}; it was deleted.")


class Corrupted(Problem):
    """The stored bytes do not open as this attachment's (altered, moved from another, or their
    key shredded), are not what was uploaded (their checksum differs), or are gone."""

    status, slug, title = 502, "attachment-corrupted", "Attachment corrupted in storage"


def to_out(attachment: Attachment) -> AttachmentOut:
    return AttachmentOut.model_validate(attachment)


def search(tenant: Tenant, record_id: uuid.UUID) -> Select[Attachment]:
    return of_clinic(tenant, Attachment).where(Attachment.record_id == record_id)


async def get(session: AsyncSession, tenant: Tenant, attachment_id: uuid.UUID) -> Attachment:
    return await get_or_404(session, tenant, Attachment, attachment_id, "attachment")


async def upload(
    session: AsyncSession,
    tenant: Tenant,
    request: Request,
    storage: Storage,
    settings: Settings,
    record_id: uuid.UUID,
    uploaded_by: uuid.UUID,
) -> Attachment:
    # The record first: another clinic's (or no) record is a 404 before a byte is read.
    await records.get(session, tenant, record_id)
    tenant_id = tenant.clinic_id
    staged = await to_thread.run_sync(staging_file, storage)
    sealed = await to_thread.run_sync(staging_file, storage)
    try:
        received = await receive_file(request, staged, limit=settings.upload_max_bytes)
        kind = files.sniff(await to_thread.run_sync(_head, staged))
        if kind is None:
            raise UnsupportedMediaType(
                "Attach a PNG, JPEG, GIF, WebP, PDF or DICOM file; the type is read from the"
                " file's content, not from its name or declared type."
            )
        attachment_id = new_id()
        version = await keys.seal_file(
            session, keys.scope_of(session, tenant), SEALED_AS, attachment_id, staged, sealed
        )
        attachment = Attachment(
            id=attachment_id,
            tenant_id=tenant_id,
            record_id=record_id,
            uploaded_by=uploaded_by,
            storage_key=new_key(tenant_id),
            filename=files.safe_filename(received.filename, kind),
            content_type=kind.media_type,
            size_bytes=received.size,
            sha256=received.sha256,
            scan_status=ScanStatus.pending if settings.clamd_address else ScanStatus.unscanned,
            sealed_with=version,
        )
        session.add(attachment)
        await session.flush()
        if settings.clamd_address:
            # Inline, from the staged copy, so a clean file is served at once; a scanner that
            # is down leaves it pending, and a job scans it when the scanner is back.
            await _scan(attachment, staged, settings.clamd_address, settings)
            if attachment.scan_status is ScanStatus.pending:
                await enqueue(
                    session,
                    SCAN_PENDING,
                    clinic_id=str(tenant_id),
                    attachment_id=str(attachment.id),
                )
        await session.flush()
        # Last, so that nothing after it can fail and leave an object no row names (only the
        # commit can, after the route: see ADR 0010).
        if attachment.scan_status is not ScanStatus.infected:
            await storage.put(attachment.storage_key, sealed)
        return attachment
    finally:
        await discard(staged)
        await discard(sealed)


def _head(path: Path) -> bytes:
    with path.open("rb") as source:
        return source.read(files.SNIFF_BYTES)


async def _scan(attachment: Attachment, staged: Path, address: str, settings: Settings) -> None:
    try:
        verdict = await clamd.scan_file(address, staged, seconds=settings.clamd_timeout_seconds)
    except clamd.ScannerUnavailable:
        # Stays pending (not downloadable) until the job scans it.
        log.exception("malware scan failed; attachment %s stays pending", attachment.id)
        return
    _record(attachment, verdict)


async def scan_pending(
    session: AsyncSession,
    tenant: Tenant,
    storage: Storage,
    settings: Settings,
    attachment_id: uuid.UUID,
) -> str | None:
    """Scan a pending attachment from storage (the job after a failed inline scan). Returns
    the storage key to delete after commit if it is infected. A scanner still down raises
    :class:`clamd.ScannerUnavailable`: the job retries later."""
    attachment = await find(session, tenant, Attachment, attachment_id, lock=True)
    if attachment is None or attachment.scan_status is not ScanStatus.pending:
        return None  # deleted meanwhile, or already scanned
    if settings.clamd_address is None:
        log.warning("attachment %s stays pending: scanning was turned off", attachment.id)
        return None
    copy = await _verified_copy(session, tenant, storage, attachment)
    try:
        verdict = await clamd.scan_file(
            settings.clamd_address, copy, seconds=settings.clamd_timeout_seconds
        )
    finally:
        await discard(copy)
    _record(attachment, verdict)
    await session.flush()
    return None if verdict.clean else attachment.storage_key


def _record(attachment: Attachment, verdict: clamd.Verdict) -> None:
    metrics.scanned(clean=verdict.clean)
    if verdict.clean:
        attachment.scan_status = ScanStatus.clean
    else:
        log.warning("malware %s in attachment %s", verdict.signature, attachment.id)
        attachment.scan_status = ScanStatus.infected
        attachment.scan_signature = verdict.signature


async def fetch(
    session: AsyncSession, tenant: Tenant, storage: Storage, attachment: Attachment
) -> Path:
    """A local copy of the attachment's bytes, opened and checked against the checksum of what
    was uploaded.

    The copy is what gets sent, so what was checked is exactly what the client receives.
    """
    if attachment.scan_status is ScanStatus.pending:
        raise NotScanned()
    if attachment.scan_status is ScanStatus.infected:
        raise Infected(attachment.scan_signature)
    return await _verified_copy(session, tenant, storage, attachment)


async def _verified_copy(
    session: AsyncSession, tenant: Tenant, storage: Storage, attachment: Attachment
) -> Path:
    sealed_with = attachment.sealed_with
    if sealed_with is None:
        # Stored in the clear, before files were sealed: `vetify keys rotate-dek` seals such a
        # file in place, holding its row from writing the sealed bytes until the row says so.
        # Wait for that, and hold the row (shared) until the copy is made, so that the bytes
        # fetched are the ones the row describes.
        sealed_with = await session.scalar(
            select(Attachment.sealed_with)
            .where(Attachment.id == attachment.id)
            .with_for_update(read=True)
        )
    stored = await to_thread.run_sync(staging_file, storage)
    copy = await to_thread.run_sync(staging_file, storage)
    try:
        await storage.get(attachment.storage_key, stored)
        if sealed_with is None:  # still in the clear
            await to_thread.run_sync(stored.replace, copy)
        else:
            scope = keys.scope_of(session, tenant)
            await keys.open_file(session, scope, SEALED_AS, attachment.id, stored, copy)
        actual = await to_thread.run_sync(_sha256, copy)
        if actual != attachment.sha256:
            log.error(
                "attachment %s: stored bytes have SHA-256 %s, expected %s",
                attachment.id,
                actual,
                attachment.sha256,
            )
            raise Corrupted("The stored file does not match its checksum; it is not served.")
    except ObjectMissing as exc:
        await discard(copy)
        log.error("attachment %s: no object %s in storage", attachment.id, exc)
        raise Corrupted("The stored file is missing.") from exc
    except Unreadable as exc:
        await discard(copy)
        log.error("attachment %s: its stored file does not open (%s)", attachment.id, exc)
        raise Corrupted("The stored file does not open as this attachment's.") from exc
    except BaseException:
        await discard(copy)
        raise
    finally:
        await discard(stored)
    return copy


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def delete(session: AsyncSession, tenant: Tenant, attachment_id: uuid.UUID) -> str:
    """Delete the row; returns the storage key, whose object the caller removes after commit."""
    attachment = await get(session, tenant, attachment_id)
    record = await records.get(session, tenant, attachment.record_id)
    if records.is_locked(record, utcnow()):
        raise records.RecordLocked()
    await session.delete(attachment)
    await records.guarded_flush(session)
    return attachment.storage_key
