"""The whole clinic as one archive, for its owner when it leaves (issue 20, ADR 0036).

Every table of the clinic's (each table with a ``tenant_id``, and the clinic's own row) as JSON
Lines of its rows, every column as stored but for two kinds: a sealed value is opened (under the
column's name without ``_sealed``: ``customers.contact``, ``medical_records.notes``), and what
is only a means to an end of ours is left out (:data:`LEFT_OUT`: credentials' hashes, blind
indexes, the index key, storage keys). Then its members (``staff.json``: name, email, role) and
every attachment's file as uploaded. Tables are found from the metadata, so a table added later
is in the archive without a change here (a test holds every column to this rule).

The archive is written a batch of rows at a time, and each file is copied in and its copy
deleted at once: a clinic's size is bounded by the disk, not the memory.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import zipfile
from pathlib import Path
from typing import IO, Any

from anyio import to_thread
from pydantic_core import to_jsonable_python
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.audit import trail
from app.auth.models import Membership, User
from app.clinics.models import Clinic
from app.db.base import Base
from app.db.repository import of_clinic
from app.db.tenancy import InClinic, Tenant, enter_tenant
from app.keys import rotation
from app.keys import service as keys
from app.kit import context
from app.kit.clock import utcnow
from app.kit.storage import Storage, discard

FORMAT = "vetify-clinic-export/1"
EXPORTED_BY = "vetify clinic export"
BATCH = 500
LEFT_OUT = frozenset(
    {
        ("credentials", "secret_hash"),
        ("invitations", "secret_hash"),
        ("customers", "email_index"),
        ("customers", "phone_index"),
        ("clinics", "index_key_sealed"),
        ("attachments", "storage_key"),
        ("client_exports", "storage_key"),
    }
)
"""Columns that mean nothing outside Vetify and would only weaken it there: the hashes that
check a credential or an invitation, the blind indexes and the key that makes them, and where
a file is stored (the file itself is in the archive)."""


def tables() -> list[Table]:
    """The clinic's tables: its own row's, then every table scoped by ``tenant_id``."""
    scoped = [t for t in Base.metadata.sorted_tables if "tenant_id" in t.c]
    return [Base.metadata.tables["clinics"], *sorted(scoped, key=lambda t: t.name)]


async def write(session: AsyncSession, tenant: Tenant, storage: Storage, archive: Path) -> None:
    """The clinic's archive written to ``archive`` (a zip, its ``manifest.json`` last, listing
    every other file's size and SHA-256)."""
    listed: list[dict[str, Any]] = []
    sealed = {(c.table, c.column): c.field for c in rotation.SEALED}
    scope = keys.scope_of(session, tenant)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for table in tables():
            mine = table.c.id if table.name == "clinics" else table.c.tenant_id
            rows = await session.stream(
                select(table).where(mine == tenant.clinic_id).order_by(*table.primary_key)
            )
            with _Entry(out, f"tables/{table.name}.jsonl", listed) as entry:
                async for batch in rows.partitions(BATCH):
                    lines = [
                        await _line(session, scope, table, row._mapping, sealed) for row in batch
                    ]
                    await to_thread.run_sync(entry.write, b"".join(lines))
        staff = await session.execute(
            select(User.id, User.name, User.email, Membership.role, Membership.active)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.tenant_id == tenant.clinic_id)
            .order_by(User.id)
        )
        with _Entry(out, "staff.json", listed) as entry:
            entry.write(_json([dict(row._mapping) for row in staff]))
        for attachment in await session.scalars(
            of_clinic(tenant, Attachment).order_by(Attachment.id)
        ):
            await _file(session, tenant, storage, attachment, out, listed)
        manifest = {
            "format": FORMAT,
            "clinic_id": str(tenant.clinic_id),
            "generated_at": utcnow().isoformat(),
            "left_out": sorted(f"{t}.{c}" for t, c in LEFT_OUT),
            "files": listed,
        }
        out.writestr("manifest.json", _json(manifest))


async def export(
    sessions: async_sessionmaker[AsyncSession], clinic_id: uuid.UUID, storage: Storage, out: Path
) -> None:
    """``vetify clinic export``: the clinic's archive written to ``out`` for an operator, and
    the export noted in the clinic's trail as a read of the clinic by ``vetify clinic
    export``."""
    with context.bound(context.Context(action=EXPORTED_BY)):
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic_id)
            clinic = await session.scalar(select(Clinic).where(Clinic.id == clinic_id))
            if clinic is None or clinic.deleted_at is not None:
                raise LookupError(f"no clinic {clinic_id} (or it was deleted)")
            await write(session, InClinic(clinic_id), storage, out)
            trail.read(session, clinic)


async def _line(
    session: AsyncSession,
    scope: str,
    table: Table,
    row: Any,
    sealed: dict[tuple[str, str], str],
) -> bytes:
    values: dict[str, Any] = {}
    for name, value in row.items():
        if (table.name, name) in LEFT_OUT:
            continue
        field = sealed.get((table.name, name))
        if field is not None:
            opened = None
            if value is not None:
                opened = (await keys.unseal_bytes(session, scope, field, row["id"], value)).decode()
            values[name.removesuffix("_sealed")] = opened
        else:
            values[name] = value
    # Bytes (the trail's hashes) as hexadecimal, as `vetify audit verify` shows them.
    plain = to_jsonable_python(values, bytes_mode="hex")
    return json.dumps(plain, ensure_ascii=False).encode() + b"\n"


async def _file(
    session: AsyncSession,
    tenant: Tenant,
    storage: Storage,
    attachment: Attachment,
    out: zipfile.ZipFile,
    listed: list[dict[str, Any]],
) -> None:
    name = f"attachments/{attachment.id}/{attachment.filename}"
    try:
        copy = await attachments.fetch(session, tenant, storage, attachment)
    except (attachments.NotScanned, attachments.Infected, attachments.Corrupted) as refused:
        listed.append({"name": name, "left_out": refused.detail})
        return
    try:
        await to_thread.run_sync(out.write, copy, name)
    finally:
        await discard(copy)
    listed.append({"name": name, "bytes": attachment.size_bytes, "sha256": attachment.sha256})


class _Entry:
    """One file of the archive, written in pieces, its size and SHA-256 listed when closed."""

    def __init__(self, out: zipfile.ZipFile, name: str, listed: list[dict[str, Any]]) -> None:
        self.name, self.listed = name, listed
        self.sink: IO[bytes] = out.open(name, "w")
        self.digest, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.digest.update(data)
        self.size += len(data)

    def __enter__(self) -> _Entry:
        return self

    def __exit__(self, *_: object) -> None:
        self.sink.close()
        self.listed.append(
            {"name": self.name, "bytes": self.size, "sha256": self.digest.hexdigest()}
        )


def _json(value: object) -> bytes:
    return json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False).encode()
