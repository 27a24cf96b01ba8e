"""A clinic's audit trail as a file (``GET /api/v1/audit-events/export``, ADR 0027): CSV for
people, JSON Lines for programs, streamed in batches so that a trail of any length is exported
in bounded memory.

The body is sent after the request's transaction has committed and its session is closed
(``app.db.session``: the request's session ends when the route returns, before the response is
sent), so it cannot read from that session. Each batch is read in a short transaction of its
own, entered in the caller's clinic as the request's was (``enter_tenant``: the ORM's filter and
row-level security), holding a connection only while it reads, never while a slow client drains
the body. The request reads the clinic's head first: the export ends there, so it is the trail
as it stood when asked for, however long it takes to send.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEvent
from app.audit.schemas import AuditEventOut
from app.db.tenancy import enter_tenant

BATCH = 1_000
"""Events read, encoded and sent at a time."""
COLUMNS = list(AuditEventOut.model_fields)
"""Every field of the list's events, in its order: the CSV's header and each line's keys."""


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


MEDIA_TYPES = {ExportFormat.csv: "text/csv", ExportFormat.jsonl: "application/jsonl"}
"""``application/jsonl``, not ``application/x-ndjson``: neither is registered; this one names the
format the issue asks for and its ``.jsonl`` files (jsonlines.org), with no ``x-`` prefix."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


async def events(
    sessions: async_sessionmaker[AsyncSession],
    clinic_id: uuid.UUID,
    query: Select[AuditEvent],
    last: int,
) -> AsyncIterator[list[AuditEventOut]]:
    """``query``'s events up to ``seq`` ``last``, oldest first, a batch at a time (keyset by
    ``seq``), each batch read in a transaction of its own in ``clinic_id``'s clinic."""
    after = 0
    while True:
        async with sessions() as session, session.begin():
            await enter_tenant(session, clinic_id)
            batch = (
                await session.scalars(
                    query.where(AuditEvent.seq > after, AuditEvent.seq <= last)
                    .order_by(AuditEvent.seq)
                    .limit(BATCH)
                )
            ).all()
            found = [AuditEventOut.model_validate(event) for event in batch]
        if found:
            yield found
        if len(found) < BATCH:
            return
        after = found[-1].seq


async def encoded(
    form: ExportFormat, batches: AsyncIterator[list[AuditEventOut]]
) -> AsyncIterator[str]:
    """The file: for CSV a header, then a line per event; for JSON Lines each event as the list
    shows it (``hash``/``prev_hash`` in hex: the chain can be checked from the file)."""
    if form is ExportFormat.jsonl:
        async for batch in batches:
            yield "".join(event.model_dump_json() + "\n" for event in batch)
        return
    yield _csv_lines([COLUMNS])
    async for batch in batches:
        yield _csv_lines([_cells(event) for event in batch])


def _cells(event: AuditEventOut) -> list[str]:
    values = event.model_dump(mode="json")
    return [_cell(values[name]) for name in COLUMNS]


def _cell(value: Any) -> str:
    """A value as a spreadsheet shows it as text: none is empty, a list its items with spaces
    (``fields``: column names), and text that would start a formula (a User-Agent is the
    client's to write) led by ``'``, which spreadsheets take as "this is text" (OWASP). JSON Lines
    keeps every value exactly."""
    if value is None:
        return ""
    text = " ".join(value) if isinstance(value, list) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_lines(rows: list[list[str]]) -> str:
    # Every cell quoted (OWASP): a separator or quote in a value can never start a cell of its own.
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n").writerows(rows)
    return out.getvalue()
