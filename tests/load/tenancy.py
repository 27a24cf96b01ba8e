"""Tenancy under load: every id a clinic's user is shown must be one of that clinic's.

Each id is claimed by the first clinic known to own it: the seeded rows before the run starts
(the fleet's manifest), later the clinic whose user first sees it (it created it, or listed it).
A second clinic shown a claimed id has been shown a foreign row. This holds whichever of the two
sees it first, so a row created during the run and leaked at once is caught too, with no
knowledge of which ids the service will make.

No Locust import: pytest imports this to test the checker itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.harness.jsonwalk import strings

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def ids_in(body: Any) -> Iterator[uuid.UUID]:
    """Every UUID anywhere in a JSON document (values, not keys)."""
    for value in strings(body):
        if len(value) == 36 and _UUID.match(value):
            yield uuid.UUID(value)


@dataclass
class Ledger:
    """Which clinic owns each id seen so far, and every foreign id shown to a clinic."""

    owner: dict[uuid.UUID, str] = field(default_factory=dict)
    checked_responses: int = 0
    checked_ids: int = 0
    foreign: list[dict[str, str]] = field(default_factory=list)

    def seed(self, clinic: str, ids: set[uuid.UUID]) -> None:
        for value in ids:
            self.owner.setdefault(value, clinic)

    def check(self, clinic: str, body: Any, where: str) -> list[uuid.UUID]:
        """Claim the ids in ``body`` for ``clinic``; the ones another clinic owns are returned
        (and recorded with ``where``, the request's name)."""
        self.checked_responses += 1
        leaked = []
        for value in ids_in(body):
            self.checked_ids += 1
            owner = self.owner.setdefault(value, clinic)
            if owner != clinic:
                leaked.append(value)
                self.foreign.append(
                    {"id": str(value), "owner": owner, "shown_to": clinic, "request": where}
                )
        return leaked

    def report(self) -> dict[str, Any]:
        return {
            "clinics": len(set(self.owner.values())),
            "ids_owned": len(self.owner),
            "checked_responses": self.checked_responses,
            "checked_ids": self.checked_ids,
            "foreign": self.foreign[:100],
            "foreign_count": len(self.foreign),
        }
