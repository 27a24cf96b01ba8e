"""Sealing and opening fields with a scope's data key (ADR 0028).

A field is sealed with its scope's current data key, and bound to where it lives: the scope,
``table.column`` and the row's id (:func:`app.kit.sealing.field_aad`). Data keys are unwrapped
once per process and kept in memory by (scope, version), looked for again in the database every
:data:`OPENED_FOR_SECONDS`: a key deleted there (retired, or shredded with its clinic) is
forgotten. A scope's first key is made in a transaction of its own, committed before anything is
sealed with it, so that no value is ever sealed with a key a rolled-back transaction took with
it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.session import role_engine
from app.db.tenancy import Tenant, check_tenant
from app.keys.models import DataKey
from app.kit import sealing
from app.kit.sealing import KeyWrapper
from app.settings import Settings

PLATFORM = "platform"
"""The scope of the rows no clinic owns (users: one person may work for several clinics)."""

CURRENT_FOR_SECONDS = 60.0
"""How long a process seals with the version of a scope's key it last read before reading it
again: a key rotated (``vetify keys rotate-dek``) is in use everywhere within this."""

OPENED_FOR_SECONDS = 60.0
"""How long a process uses a data key it opened before it looks that the key is still stored
(by its primary key; unwrapped again only if it was wrapped anew): a key deleted is gone from
every process within this, so a shredded clinic's values cannot be opened from memory either."""

_wrapper: KeyWrapper | None = None
_opened: dict[tuple[str, int], tuple[bytes, bytes, float]] = {}
"""(scope, version): the key, the wrapped bytes it came from, when the row was last seen."""
_current: dict[str, tuple[int, float]] = {}


def configure(wrapper: KeyWrapper) -> None:
    """The process's key-encryption keys (set at start-up from the settings)."""
    global _wrapper  # one keyring per process, as one settings object
    _wrapper = wrapper
    _opened.clear()
    _current.clear()


def wrapper_from(settings: Settings) -> KeyWrapper:
    """The settings' key-encryption keys: the keyring (the development key if none is set), or a
    KMS key, with the keyring beside it if one is set."""
    if settings.kms_key_id is None:
        return sealing.Keyring.of(settings.keyring)
    import boto3  # only where KMS is configured: a process without it never loads boto3

    client = boto3.client(
        "kms", region_name=settings.kms_region, endpoint_url=settings.kms_endpoint_url
    )
    keyring = None if settings.encryption_keys is None else sealing.Keyring.of(settings.keyring)
    return sealing.AwsKms(settings.kms_key_id, client, keyring)


def scope_of(session: AsyncSession, tenant: Tenant) -> str:
    """The scope of the clinic ``session`` is in (checked to be ``tenant``'s): its data key
    seals that clinic's fields."""
    return str(check_tenant(session, tenant))


def wrapper() -> KeyWrapper:
    if _wrapper is None:
        raise RuntimeError("no key-encryption keys: keys.configure() runs at start-up")
    return _wrapper


async def seal(
    session: AsyncSession, scope: str, field: str, row_id: uuid.UUID, plaintext: str
) -> bytes:
    return await seal_bytes(session, scope, field, row_id, plaintext.encode())


async def unseal(
    session: AsyncSession, scope: str, field: str, row_id: uuid.UUID, sealed: bytes
) -> str:
    return (await unseal_bytes(session, scope, field, row_id, sealed)).decode()


async def seal_bytes(
    session: AsyncSession, scope: str, field: str, row_id: uuid.UUID, plaintext: bytes
) -> bytes:
    """``plaintext`` sealed with the scope's current key, bound to ``field`` of row ``row_id``."""
    version, key = await _current_key(session, scope)
    return sealing.seal(key, version, plaintext, sealing.field_aad(scope, field, row_id))


async def unseal_bytes(
    session: AsyncSession, scope: str, field: str, row_id: uuid.UUID, sealed: bytes
) -> bytes:
    """A value :func:`seal_bytes` sealed for this very place, or :class:`~app.kit.sealing.
    Unreadable` (moved, altered, or its key shredded)."""
    key = await _key(session, scope, sealing.version_of(sealed))
    return sealing.unseal(key, sealed, sealing.field_aad(scope, field, row_id))


async def seal_file(
    session: AsyncSession, scope: str, what: str, file_id: uuid.UUID, source: Path, sink: Path
) -> int:
    """The file ``source`` sealed into ``sink`` with the scope's current key, bound to
    ``what`` (e.g. ``client_exports``) and ``file_id``: a stream of segments, never held whole.
    Returns the key's version (which the file's row keeps: ``rotation.SealedFiles``)."""
    version, key = await _current_key(session, scope)
    aad = sealing.file_aad(scope, what, file_id)
    await asyncio.to_thread(sealing.seal_file, key, version, source, sink, aad)
    return version


async def open_file(
    session: AsyncSession, scope: str, what: str, file_id: uuid.UUID, source: Path, sink: Path
) -> None:
    """A file sealed by :func:`seal_file` opened into ``sink``, or :class:`~app.kit.sealing.
    Unreadable` (``sink`` is then removed)."""
    version = await asyncio.to_thread(sealing.file_version, source)
    key = await _key(session, scope, version)
    aad = sealing.file_aad(scope, what, file_id)
    await asyncio.to_thread(sealing.open_file, key, source, sink, aad)


async def current_key(session: AsyncSession, scope: str) -> tuple[int, bytes]:
    """The scope's current data key and its version, for sealing a file outside a transaction
    (:func:`app.kit.sealing.seal_file`): what :func:`seal_file` seals with."""
    return await _current_key(session, scope)


async def _current_key(session: AsyncSession, scope: str) -> tuple[int, bytes]:
    known = _current.get(scope)
    if known is None or time.monotonic() - known[1] >= CURRENT_FOR_SECONDS:
        newest = await session.scalar(
            select(func.max(DataKey.version)).where(DataKey.scope == scope)
        )
        known = (newest or await _first_key(session, scope), time.monotonic())
        _current[scope] = known
    return known[0], await _key(session, scope, known[0])


async def _first_key(session: AsyncSession, scope: str) -> int:
    """Version 1 of ``scope``'s key, made and committed on a connection of its own (two
    processes making it at once keep the first one stored)."""
    engine = cast(AsyncEngine, session.bind)  # the service's sessions are made on one
    key = sealing.new_data_key()
    kek_id, wrapped = await asyncio.to_thread(wrapper().wrap, key, sealing.key_context(scope, 1))
    async with engine.begin() as connection:
        await connection.execute(
            insert(DataKey)
            .values(scope=scope, version=1, kek_id=kek_id, wrapped=wrapped)
            .on_conflict_do_nothing()
        )
    return 1


async def _key(session: AsyncSession, scope: str, version: int) -> bytes:
    opened = _opened.get((scope, version))
    if opened is not None and time.monotonic() - opened[2] < OPENED_FOR_SECONDS:
        return opened[0]
    # Read committed: a first key committed since this transaction began is seen.
    row = await session.get(DataKey, (scope, version), populate_existing=True)
    if row is None:
        _opened.pop((scope, version), None)
        raise sealing.Unreadable(f"no data key {version} for this scope (shredded?)")
    if opened is not None and opened[1] == row.wrapped:
        key = opened[0]
    else:
        key = await asyncio.to_thread(
            wrapper().unwrap, row.kek_id, row.wrapped, sealing.key_context(scope, version)
        )
    _opened[(scope, version)] = (key, row.wrapped, time.monotonic())
    return key


async def rotate_all(owner_url: str, wrapper: KeyWrapper) -> int:
    """:func:`rotate_kek` in one transaction as the schema's owner (``owner_url``)."""
    engine = role_engine(owner_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            return await rotate_kek(session, wrapper)
    finally:
        await engine.dispose()


async def rotate_kek(session: AsyncSession, wrapper: KeyWrapper) -> int:
    """Wrap again, with ``wrapper``'s active key-encryption key, every data key another one
    wrapped; no sealed value changes, and the process's own keys (:func:`configure`) are not
    touched. Run as the schema's owner (``vetify keys rotate-kek``). Returns how many were
    wrapped again."""
    active = await asyncio.to_thread(lambda: wrapper.active)
    rows = (await session.execute(select(DataKey).where(DataKey.kek_id != active))).scalars()
    count = 0
    for row in rows:
        context = sealing.key_context(row.scope, row.version)
        key = await asyncio.to_thread(wrapper.unwrap, row.kek_id, row.wrapped, context)
        kek_id, wrapped = await asyncio.to_thread(wrapper.wrap, key, context)
        await session.execute(
            update(DataKey)
            .where(DataKey.scope == row.scope, DataKey.version == row.version)
            .values(kek_id=kek_id, wrapped=wrapped)
        )
        count += 1
    return count
