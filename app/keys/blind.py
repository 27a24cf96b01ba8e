"""Blind indexes: finding a sealed value by equality without opening every row (ADR 0032).

A clinic's index key (32 random bytes) lives in ``clinics.index_key_sealed``, sealed with the
clinic's data key like any other field: ``vetify keys rotate-dek`` seals it again with the new
key (its bytes, and so every index, stay the same), and shredding the clinic's data keys
shreds it too. The index of a value is HMAC-SHA256 over the field's name and the value, with
that key: equal values of one field in one clinic have equal indexes, and nothing else can be
learnt from them without the key; the same address in two clinics has two unrelated indexes,
and an email address's index never matches a phone number's.

The key is made on first need, in the transaction that needs it (a rolled-back one takes it
with it, and nothing was indexed with it). Two transactions making it at once: the second's
conditional UPDATE waits for the first's row lock, finds the key set once it commits, and reads
that one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import LargeBinary, Uuid, column, select, table, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.tenancy import Tenant, check_tenant
from app.keys import rotation
from app.keys import service as keys

INDEX_KEY = "clinics.index_key"
rotation.seals(rotation.SealedColumn("clinics", "index_key_sealed", INDEX_KEY, scoped_by="id"))

_clinics = table("clinics", column("id", Uuid()), column("index_key_sealed", LargeBinary()))


async def index_key(session: AsyncSession, tenant: Tenant) -> bytes:
    """The clinic's index key, made now if it has none (a write about to index a value)."""
    clinic_id = check_tenant(session, tenant)
    sealed = await _sealed(session, clinic_id)
    if sealed is None:
        fresh = await keys.seal_bytes(
            session, str(clinic_id), INDEX_KEY, clinic_id, secrets.token_bytes(32)
        )
        made = await session.scalar(
            update(_clinics)
            .where(_clinics.c.id == clinic_id, _clinics.c.index_key_sealed.is_(None))
            .values(index_key_sealed=fresh)
            .returning(_clinics.c.index_key_sealed)
        )
        # None: another transaction made it first, and committed; it is read now. (Its clinic's
        # own row is always there to read: the transaction is in that clinic.)
        sealed = made or await _sealed(session, clinic_id) or b""
    return await keys.unseal_bytes(session, str(clinic_id), INDEX_KEY, clinic_id, sealed)


async def index_key_if_any(session: AsyncSession, tenant: Tenant) -> bytes | None:
    """The clinic's index key, or None if it has none yet (then nothing was indexed)."""
    clinic_id = check_tenant(session, tenant)
    sealed = await _sealed(session, clinic_id)
    if sealed is None:
        return None
    return await keys.unseal_bytes(session, str(clinic_id), INDEX_KEY, clinic_id, sealed)


async def _sealed(session: AsyncSession, clinic_id: uuid.UUID) -> bytes | None:
    return await session.scalar(
        select(_clinics.c.index_key_sealed).where(_clinics.c.id == clinic_id)
    )


def index_of(key: bytes, field: str, value: str) -> bytes:
    """The blind index of ``value`` (already normalised) of ``field`` (``table.column``)."""
    return hmac.digest(key, field.encode() + b"\0" + value.encode(), hashlib.sha256)
