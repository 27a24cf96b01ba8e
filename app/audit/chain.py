"""The audit trail's hash chain (ADR 0027): each clinic's events, in order, each hashed with the
one before it, so an edited, deleted, inserted or reordered event breaks every link after it.

``hash = SHA-256(prev_hash || canonical(event))``, where the canonical encoding is JSON with
sorted keys, no spaces, UTF-8, ids as their text, the time in UTC to the microsecond: the same
bytes from the values the service wrote and from the row read back. The first event of a clinic
follows :data:`GENESIS`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

GENESIS = bytes(32)


@dataclass(frozen=True, slots=True)
class Entry:
    """What an event says, all of it hashed."""

    tenant_id: uuid.UUID
    seq: int
    occurred_at: dt.datetime
    user_id: uuid.UUID | None
    credential_id: uuid.UUID | None
    role: str | None
    action: str
    object_type: str
    object_id: uuid.UUID | None
    change: str
    fields: tuple[str, ...]
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    job_id: int | None
    event: str | None = None
    """A security event's name (``login_failed``...), None for a change or a read."""
    outcome: str | None = None
    """What came of a security event (``refused``, ``locked``...), None for a change or a read."""


def canonical(entry: Entry) -> bytes:
    values = {
        "tenant_id": str(entry.tenant_id),
        "seq": entry.seq,
        "occurred_at": entry.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "user_id": _text(entry.user_id),
        "credential_id": _text(entry.credential_id),
        "role": entry.role,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": _text(entry.object_id),
        "change": entry.change,
        "fields": list(entry.fields),
        "client_ip": entry.client_ip,
        "user_agent": entry.user_agent,
        "request_id": entry.request_id,
        "job_id": entry.job_id,
    }
    # Only when set: events written before security events joined the trail hash as they did.
    if entry.event is not None:
        values["event"] = entry.event
    if entry.outcome is not None:
        values["outcome"] = entry.outcome
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def link(prev_hash: bytes, entry: Entry) -> bytes:
    return hashlib.sha256(prev_hash + canonical(entry)).digest()


@dataclass(frozen=True, slots=True)
class Stored:
    """An event as read back: what it says and the links it was written with."""

    entry: Entry
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a clinic's chain does not hold."""

    seq: int
    reason: str


class Checker:
    """One clinic's chain, fed event by event in ``seq`` order (a trail of years is checked in
    bounded memory): :meth:`feed` and :meth:`end` answer the first :class:`Break`, if any."""

    def __init__(self, base_seq: int = 0, base_hash: bytes = GENESIS) -> None:
        """From the chain's base: the last event pruned by retention and its hash (none:
        the chain starts at event 1, after GENESIS)."""
        self.expected = base_seq + 1
        self.prev = base_hash

    def feed(self, event: Stored) -> Break | None:
        seq = event.entry.seq
        if seq != self.expected:
            return Break(self.expected, f"event {self.expected} is missing (the next is {seq})")
        if event.prev_hash != self.prev:
            return Break(seq, "its link to the event before it does not match that event")
        if link(self.prev, event.entry) != event.hash:
            return Break(seq, "its contents are not what was written")
        self.expected, self.prev = seq + 1, event.hash
        return None

    def end(self, head: tuple[int, bytes] | None) -> Break | None:
        """After the last event: does the clinic's head (its last ``seq`` and ``hash``, None
        if it has none) point at it?"""
        last = (self.expected - 1, self.prev)
        if head is None and last[0] > 0:
            return Break(last[0], "the chain has events but no head")
        if head is not None and head != last:
            return Break(head[0], f"the head is at event {head[0]}, the events end at {last[0]}")
        return None


def first_break(
    events: Iterable[Stored], head: tuple[int, bytes] | None, base: tuple[int, bytes] = (0, GENESIS)
) -> Break | None:
    """Where ``events`` (one clinic's, by ``seq``, after its ``base``) stop being the chain the
    service wrote, or stop matching its ``head``; None if they hold."""
    checker = Checker(*base)
    for event in events:
        broken = checker.feed(event)
        if broken is not None:
            return broken
    return checker.end(head)
