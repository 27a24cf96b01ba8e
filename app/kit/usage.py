"""Per-clinic usage, counted in the process's memory: requests and job runs per clinic per UTC
day, for operators' cost monitoring (ADR 0026).

Counting is a dict increment (it runs on every authenticated request: ADR 0019 allows no write
there); ``app.observability.usage`` takes the counts and adds them to the ``clinic_usage`` table
every ``VETIFY_USAGE_FLUSH_SECONDS`` and at shutdown. Here, in the kit, so that the dependency
layer (requests) and the queue (jobs) may both count. Ids and numbers only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from app.kit.clock import utcnow


@dataclass(slots=True)
class Counts:
    requests: int = 0
    jobs: int = 0


Key = tuple[uuid.UUID, dt.date]
"""A clinic and a UTC day."""


class Usage:
    """The counts of one process since its last flush. Not thread-safe, and need not be: every
    count and the flush run on the process's one event loop."""

    def __init__(self) -> None:
        self._counts: dict[Key, Counts] = {}

    def request(self, clinic_id: uuid.UUID) -> None:
        self._at(clinic_id).requests += 1

    def job(self, clinic_id: uuid.UUID) -> None:
        self._at(clinic_id).jobs += 1

    def _at(self, clinic_id: uuid.UUID) -> Counts:
        # The day the work happened, not the day of the flush: a flush after midnight still
        # adds yesterday's counts to yesterday.
        key = (clinic_id, utcnow().date())
        found = self._counts.get(key)
        if found is None:
            found = self._counts[key] = Counts()
        return found

    def take(self) -> dict[Key, Counts]:
        """Every count so far, leaving none: what a flush writes."""
        taken, self._counts = self._counts, {}
        return taken

    def give_back(self, taken: dict[Key, Counts]) -> None:
        """Counts a flush could not write, added to those counted since, for the next try."""
        for key, counts in taken.items():
            here = self._counts.setdefault(key, Counts())
            here.requests += counts.requests
            here.jobs += counts.jobs

    def __len__(self) -> int:
        return len(self._counts)


def clinic_named(arguments: Mapping[str, object]) -> uuid.UUID | None:
    """The clinic a job's arguments name (``clinic_id``), if they name one validly."""
    value = arguments.get("clinic_id")
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
