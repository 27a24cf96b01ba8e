"""Anchors of the audit trail (ADR 0027): each clinic's head (seq, hash), signed with an Ed25519
key the service never holds, so that a trail cut short, or rewritten with its hashes made
again, no longer matches what was signed before.

``vetify audit anchor`` (an operator's cron job, e.g. every 15 minutes) reads the heads not yet
anchored as the backup role, signs them, stores them as the schema's owner, and prints each as
a JSON line: kept somewhere the database's owner cannot reach (a log collector, object storage
with a retention lock), those lines let ``vetify audit verify --anchors FILE`` find a
truncation even if the anchors in the database went with it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.audit.models import AuditAnchor
from app.db.session import role_engine
from app.kit.clock import utcnow

_HEADS_NOT_ANCHORED = text(
    "SELECT h.tenant_id, h.seq, h.hash FROM audit_heads h WHERE NOT EXISTS ("
    " SELECT 1 FROM audit_anchors a WHERE a.clinic_id = h.tenant_id AND a.seq >= h.seq)"
    " ORDER BY h.tenant_id"
)


@dataclass(frozen=True)
class Anchor:
    clinic_id: uuid.UUID
    seq: int
    hash: bytes
    signature: bytes
    anchored_at: dt.datetime

    def line(self) -> str:
        """The anchor as one JSON line (what ``--anchors`` reads back)."""
        return json.dumps(
            {
                "clinic_id": str(self.clinic_id),
                "seq": self.seq,
                "hash": self.hash.hex(),
                "signature": self.signature.hex(),
                "anchored_at": self.anchored_at.isoformat(),
            }
        )

    @classmethod
    def from_line(cls, line: str) -> Anchor:
        """One line as :meth:`line` wrote it; a ValueError (or KeyError) if it is not one."""
        found = json.loads(line)
        return cls(
            uuid.UUID(found["clinic_id"]),
            int(found["seq"]),
            bytes.fromhex(found["hash"]),
            bytes.fromhex(found["signature"]),
            dt.datetime.fromisoformat(found["anchored_at"]),
        )


def _message(clinic_id: uuid.UUID, seq: int, head: bytes, at: dt.datetime) -> bytes:
    stamp = at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return f"vetify:audit-anchor:v1:{clinic_id}:{seq}:{head.hex()}:{stamp}".encode()


def sign(key: Ed25519PrivateKey, clinic_id: uuid.UUID, seq: int, head: bytes) -> Anchor:
    at = utcnow()
    return Anchor(clinic_id, seq, head, key.sign(_message(clinic_id, seq, head, at)), at)


def genuine(public: Ed25519PublicKey, anchor: Anchor) -> bool:
    message = _message(anchor.clinic_id, anchor.seq, anchor.hash, anchor.anchored_at)
    try:
        public.verify(anchor.signature, message)
    except InvalidSignature:
        return False
    return True


async def anchor_trails(backup_url: str, owner_url: str, key: Ed25519PrivateKey) -> list[Anchor]:
    """Sign and store every clinic's head that no anchor holds yet; the anchors made."""
    reader, writer = role_engine(backup_url), role_engine(owner_url)
    try:
        async with reader.connect() as connection:
            heads = (await connection.execute(_HEADS_NOT_ANCHORED)).all()
        anchors = [sign(key, clinic, seq, head) for clinic, seq, head in heads]
        if anchors:
            async with writer.begin() as connection:
                await connection.execute(
                    insert(AuditAnchor)
                    .values(
                        [
                            {
                                "clinic_id": a.clinic_id,
                                "seq": a.seq,
                                "hash": a.hash,
                                "signature": a.signature,
                                "anchored_at": a.anchored_at,
                            }
                            for a in anchors
                        ]
                    )
                    .on_conflict_do_nothing()  # another run got there first: as good
                )
        return anchors
    finally:
        await reader.dispose()
        await writer.dispose()


async def stored(connection: AsyncConnection, clinic_id: uuid.UUID) -> list[Anchor]:
    """``clinic_id``'s anchors in the database, by ``seq``."""
    rows = await connection.execute(
        select(
            AuditAnchor.clinic_id,
            AuditAnchor.seq,
            AuditAnchor.hash,
            AuditAnchor.signature,
            AuditAnchor.anchored_at,
        )
        .where(AuditAnchor.clinic_id == clinic_id)
        .order_by(AuditAnchor.seq)
    )
    return [Anchor(*row) for row in rows]


def read_lines(lines: Iterable[str]) -> list[Anchor]:
    """Anchors kept outside the database (``vetify audit anchor``'s output), blank lines
    skipped; a ValueError naming the line that is not an anchor."""
    found = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                found.append(Anchor.from_line(line))
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"line {number} is not an anchor") from None
    return found
