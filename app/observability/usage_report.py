"""``vetify usage``: per clinic, requests and job runs over some UTC days and storage now, for
operators' cost monitoring (ADR 0026).

Read as the backup role (``VETIFY_DATABASE_BACKUP_URL``): clinics and attachments are walled by
row-level security, which the service's role cannot see past, and the backup role reads every
row and writes none (ADR 0015).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import text

from app.db.session import role_engine
from app.kit.clock import utcnow

# Every clinic, and every clinic id with usage in the window (a deleted clinic's too: its cost
# was real). Storage is what is stored now: an infected file's bytes were deleted, its row kept.
REPORT = text(
    """
    WITH counted AS (
        SELECT clinic_id, sum(requests)::bigint AS requests, sum(jobs)::bigint AS jobs
        FROM clinic_usage WHERE day BETWEEN :first AND :last GROUP BY clinic_id
    ), stored AS (
        SELECT tenant_id AS clinic_id, sum(size_bytes)::bigint AS bytes
        FROM attachments WHERE scan_status <> 'infected' GROUP BY tenant_id
    )
    SELECT coalesce(c.id, counted.clinic_id) AS clinic_id, c.name,
           coalesce(counted.requests, 0) AS requests, coalesce(counted.jobs, 0) AS jobs,
           coalesce(stored.bytes, 0) AS storage_bytes
    FROM clinics AS c
    FULL JOIN counted ON counted.clinic_id = c.id
    LEFT JOIN stored ON stored.clinic_id = c.id
    ORDER BY requests DESC, jobs DESC, storage_bytes DESC, clinic_id
    """
)


@dataclass(frozen=True)
class ClinicRow:
    clinic_id: uuid.UUID
    name: str | None
    """None for a clinic deleted since."""
    requests: int
    jobs: int
    storage_bytes: int


@dataclass(frozen=True)
class Report:
    first: dt.date
    last: dt.date
    clinics: list[ClinicRow]

    def as_json(self) -> dict[str, object]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "clinics": [
                {
                    "clinic_id": str(row.clinic_id),
                    "name": row.name,
                    "requests": row.requests,
                    "jobs": row.jobs,
                    "storage_bytes": row.storage_bytes,
                }
                for row in self.clinics
            ],
        }

    def table(self) -> str:
        days = f"{self.first}" if self.first == self.last else f"{self.first} to {self.last}"
        lines = [
            f"usage {days} (UTC; requests and jobs of those days, storage now)",
            f"{'clinic':<36}  {'name':<30} {'requests':>10} {'jobs':>8} {'storage bytes':>15}",
        ]
        for row in self.clinics:
            name = "(deleted)" if row.name is None else row.name[:30]
            lines.append(
                f"{row.clinic_id!s:<36}  {name:<30} {row.requests:>10} {row.jobs:>8}"
                f" {row.storage_bytes:>15}"
            )
        if not self.clinics:
            lines.append("no clinics")
        return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--day",
        type=dt.date.fromisoformat,
        help="the last UTC day reported, YYYY-MM-DD (default today)",
    )
    parser.add_argument(
        "--days", type=_positive, default=1, help="how many days up to --day (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _positive(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 3660:
        raise argparse.ArgumentTypeError("must be from 1 to 3660")
    return number


def window(day: dt.date | None, days: int) -> tuple[dt.date, dt.date]:
    """The first and last UTC day of ``days`` days ending with ``day`` (today if None)."""
    last = day if day is not None else utcnow().date()
    return last - dt.timedelta(days=days - 1), last


async def report(url: str, first: dt.date, last: dt.date) -> Report:
    """The report, read with ``url`` (the backup role's; any driver named in it is asyncpg's)."""
    engine = role_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(REPORT, {"first": first, "last": last})
            found = [ClinicRow(**row._mapping) for row in rows]
    finally:
        await engine.dispose()
    return Report(first, last, found)


def printable(found: Report, as_json: bool) -> str:
    return json.dumps(found.as_json(), indent=2) if as_json else found.table()
