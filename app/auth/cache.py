"""The credential cache: a resolved credential and its clinic's standing, kept in the process
while the database's auth epochs stand still (ADR 0019).

An entry is used only when the epochs that the request's first statement reads
(``enter_tenant``) are the ones it was resolved under, and its standing has not reached a
change of its own (a trial's end): a revocation, role change, disabled account or unpaid
invoice moves an epoch in the transaction that makes it, so the next request on any process
resolves afresh. The cache saves statements, never a decision: :func:`app.auth.service.admit`
still judges each request against the clock.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass

from app.auth.principal import Standing
from app.auth.service import Resolved
from app.db.tenancy import Epochs


@dataclass(frozen=True, slots=True)
class Known:
    resolved: Resolved
    standing: Standing
    clinic_epoch: int | None
    checked_at: dt.datetime
    """When the standing was read: it holds from then until its ``changes_at``. A clock set
    back before it (an NTP step) may have undone a trial's end, so it is read again."""

    def current(self, epochs: Epochs, now: dt.datetime) -> bool:
        return (
            self.clinic_epoch is not None
            and epochs.clinic == self.clinic_epoch
            and epochs.user == self.resolved.user_epoch
            and self.checked_at <= now
            and (self.standing.changes_at is None or now < self.standing.changes_at)
        )


class CredentialCache:
    """The last ``size`` credentials used, by the SHA-256 of their secret."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._known: OrderedDict[bytes, Known] = OrderedDict()

    def get(self, key: bytes) -> Known | None:
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
        return known

    def count(self, *, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    def put(self, key: bytes, known: Known) -> None:
        if self.size == 0:
            return
        self._known[key] = known
        self._known.move_to_end(key)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def drop(self, key: bytes) -> None:
        self._known.pop(key, None)

    def __len__(self) -> int:
        return len(self._known)
