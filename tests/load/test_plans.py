"""The query plans of every list and search route, over a database at realistic size (issue 18).

A database of the length's size (tests/load/bigdata.py: ``smoke`` in the pr set, ``large`` in
the nightly one) is built on the stage's PostgreSQL; the app runs in process on it (as the
service's role, row-level security on) and every paged list route of the published document
(``tests.security.surface.list_routes``) and every ``GET`` answering an array (:func:`lists`:
a new one is covered, or fails here for want of filter values or a row to read under) is called
as the biggest clinic's owner: unfiltered, with each of its filters at
representative values, and for each, its second page (the cursor). Every SELECT a call sends is
recorded with its parameters (tests/harness/statements.py) and sent again, as the service's
role inside the clinic (``vetify_enter``, as ``enter_tenant`` does), under
``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``. A route fails on:

* a sequential scan of a tenant table (of more than :data:`SMALL_TABLE` pages): its cost grows
  with every clinic's rows, not the page's;
* in the page's statement, a Sort fed by anything but an index, or sorting more rows than the
  largest page holds (``MAX_LIMIT``): keyset pagination must read an index in the list's order,
  or each page sorts the clinic's (or the filter's) rows again;
* more than :data:`BUFFERS` shared buffers (hit + read) for one statement, unless the variant is
  in :data:`KNOWN` with its reason (which waives that and the sort's size, nothing else).

The execution times' p50/p95/max (EXPLAIN ANALYZE's, the server's own) are printed and written to
reports/plans.json with every statement's plan summary; they are reported, not asserted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.auth.models import User
from app.db.migrate import plain_url
from app.keys import service as keys
from app.kit.pagination import MAX_LIMIT
from app.models import Base
from tests.harness import databases
from tests.harness.blocking import Blocking, serving
from tests.harness.live import suite_length
from tests.harness.plugin import stage_settings
from tests.harness.services import PostgresServer, RedisServer
from tests.harness.smtp import Relay
from tests.harness.statements import recording
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import Actor, World
from tests.load import bigdata
from tests.security.surface import Operation, api_operations, list_routes, types

SIZE = {"smoke": "smoke", "full": "large"}[suite_length()]

BUFFERS = 2_000
"""Shared buffers (8 KiB pages, hit + read) one statement of one page may touch. Measured at
``large`` (2026-12-05, with migration 0009): an unfiltered page reads 3-90 (the index's few
pages, then a heap page per row: a clinic's rows are spread over the table); a filtered one up
to 807 (a common first name, ``ana``, read in id order until 51 of the clinic's 13,000
customers match), a rare species 508. Reading a whole clinic's rows of a big table is 4,000 and
more at that size (its customers 4,382, its pets 5,806, its 129,000 appointments through
``ix_appointments_tenant_id`` 8,000). 2,000 is 2.5 times the largest page that reads by index
and half the smallest whole-clinic read: it catches a lost index, not an unlucky page."""

KNOWN: dict[tuple[str, str], str] = {
    ("/api/v1/customers", "q=silva"): "substring search (LIKE '%needle%') has no index: a"
    " needle matching 3% of the clinic reads all its customers (4,382 buffers at large);"
    " a trigram index needs pg_trgm (docs/indexes.md)",
    ("/api/v1/pets", "q=luna"): "substring search has no index: 5,806 buffers at large"
    " (docs/indexes.md)",
    ("/api/v1/appointments", "status=confirmed"): "under row-level security an enum's equality"
    " (not leakproof) cannot be an index condition, so an index on status is never used; the"
    " book is read from the clinic's first appointment until 51 confirmed (all in the future)"
    " match: 29,381 buffers at large (docs/indexes.md)",
}
"""Variants that read more than a page's worth, each for a reason written here and in
docs/indexes.md: only the buffer budget and the sort size are waived (never the sequential
scan rule). A ratchet: remove an entry when its cause is fixed."""

TENANT_TABLES = frozenset(
    table.name for table in Base.metadata.tables.values() if "tenant_id" in table.c
) | {"clinics"}
SMALL_TABLE = 8
"""Pages (64 KiB) up to which a tenant table may be read whole: PostgreSQL rightly reads a table
that small rather than an index and the table (the smoke size's locations and rooms, 50 rows)."""

Values = Callable[[], list[Any]]
"""Representative values of one filter, for the biggest clinic (clinic 1) of bigdata."""


def _row(kind: str, *parts: int) -> str:
    return str(bigdata.row_id(kind, 1, *parts))


def _day(days_ago: int) -> str:
    return (dt.date.today() - dt.timedelta(days=days_ago)).isoformat()


FILTERS: dict[tuple[str, str], Values] = {
    # A common surname, a common first name. A rare needle reads the clinic's rows: substring
    # search has no index yet (docs/indexes.md).
    ("/api/v1/customers", "q"): lambda: ["silva", "ana"],
    ("/api/v1/pets", "q"): lambda: ["luna"],
    ("/api/v1/pets", "customer_id"): lambda: [_row("customer", 1)],
    ("/api/v1/pets", "species"): lambda: ["dog", "rabbit"],
    ("/api/v1/pets", "include_deceased"): lambda: ["true"],
    # A past day, and today (the front desk's view).
    ("/api/v1/appointments", "day"): lambda: [_day(100), _day(0)],
    ("/api/v1/appointments", "vet_id"): lambda: [_row("user", 1)],
    ("/api/v1/appointments", "status"): lambda: ["completed", "no_show", "confirmed"],
    ("/api/v1/appointments", "pet_id"): lambda: [_row("pet", 1)],
    ("/api/v1/appointments", "room_id"): lambda: [_row("room", 0)],
    ("/api/v1/medical-records", "pet_id"): lambda: [_row("pet", 1)],
    ("/api/v1/rooms", "location_id"): lambda: [str(bigdata.row_id("location", 1))],
    # One appointment's history; a vet's bookings; a time range's start and end.
    ("/api/v1/audit-events", "object_id"): lambda: [_row("appointment", 1)],
    ("/api/v1/audit-events", "user_id"): lambda: [_row("user", 1)],
    ("/api/v1/audit-events", "action"): lambda: ["appointments:write"],
    ("/api/v1/audit-events", "object_type"): lambda: ["appointments"],
    ("/api/v1/audit-events", "change"): lambda: ["insert"],
    ("/api/v1/audit-events", "since"): lambda: [f"{_day(100)}T00:00:00Z"],
    ("/api/v1/audit-events", "until"): lambda: [f"{_day(100)}T00:00:00Z"],
}
PAGING = {"cursor", "limit"}
PATHS: dict[tuple[str, str], Callable[[], str]] = {
    # Every third pet has a weight (bigdata).
    ("/api/v1/pets/{pet_id}/weights", "pet_id"): lambda: _row("pet", 3),
}
"""The row a list under a path parameter is read for."""


def _answers_array(op: Operation) -> bool:
    content = op.spec.get("responses", {}).get("200", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    return schema is not None and "array" in types(schema)


def lists() -> list[Operation]:
    """Every list the API answers: the paged ones (``list_routes``), and every ``GET`` that
    answers a JSON array (a pet's weights, the invitations, the caller's tokens)."""
    return list_routes() + [
        op for op in api_operations() if op.method == "get" and _answers_array(op)
    ]


def _url(op: Operation) -> str:
    url = op.path
    for parameter in op.spec.get("parameters", []):
        if parameter["in"] == "path":
            key = (op.path, parameter["name"])
            assert key in PATHS, f"{op.path}: no row for {parameter['name']} in PATHS"
            url = url.replace("{" + parameter["name"] + "}", PATHS[key]())
    return url


@dataclass(frozen=True)
class Explained:
    route: str
    variant: str
    sql: str
    paged: bool
    """The page's own statement (it has the LIMIT), not one loading the page's details."""
    filtered: bool
    known: str | None
    """Why this variant may exceed the budget (:data:`KNOWN`)."""
    milliseconds: float
    buffers: int
    nodes: list[dict[str, Any]]
    """Every node of the plan: type, relation, index, rows."""

    def problems(self) -> list[str]:
        found = []
        for node in self.nodes:
            if (
                node["type"] == "Seq Scan"
                and node["relation"] in TENANT_TABLES
                and node["buffers"] > SMALL_TABLE
            ):
                found.append(f"a sequential scan of {node['relation']} ({node['buffers']} pages)")
            if node["type"] == "Sort" and self.paged:
                if not node["fed_by_index"]:
                    found.append("a Sort fed by no index")
                elif node["rows_in"] > MAX_LIMIT and not self.known:
                    found.append(f"a Sort of {node['rows_in']:.0f} rows for one page")
        if self.buffers > BUFFERS and not self.known:
            found.append(f"{self.buffers} shared buffers (budget {BUFFERS})")
        return found


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    children = plan.get("Plans", [])
    below = [node for child in children for node in _nodes(child)]
    yield {
        "type": plan["Node Type"],
        "relation": plan.get("Relation Name"),
        "index": plan.get("Index Name"),
        "rows": plan.get("Actual Rows"),
        "buffers": plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0),
        "rows_in": sum(child.get("Actual Rows", 0) for child in children),
        # What it sorts came through indexes: no table bigger than a few pages read whole.
        "fed_by_index": not any(
            node["type"] == "Seq Scan" and node["buffers"] > SMALL_TABLE for node in below
        ),
    }
    yield from below


@dataclass(frozen=True)
class Call:
    route: str
    variant: str
    filtered: bool
    known: str | None
    statements: list[tuple[str, Any]]


def _variants(op: Operation) -> list[tuple[str, dict[str, str]]]:
    """The route unfiltered, then each filter alone at each of its values."""
    names = [p["name"] for p in op.spec.get("parameters", []) if p["in"] == "query"]
    missing = [n for n in names if n not in PAGING and (op.path, n) not in FILTERS]
    assert not missing, f"{op.path}: no representative values for {missing} in FILTERS"
    return [("all", {})] + [
        (f"{name}={value}", {name: value})
        for name in names
        if name not in PAGING
        for value in FILTERS[op.path, name]()
    ]


def _drive(http: Blocking, actor: Actor, op: Operation) -> list[Call]:
    """Each variant's first and second page, with the SELECTs each sent."""
    calls = []
    url = _url(op)
    http.request("GET", url, headers=actor.headers)  # what is done once: the token cached
    for variant, params in _variants(op):
        cursor: str | None = None
        for page in ("page 1", "page 2"):
            query = params | ({"cursor": cursor} if cursor else {})
            with recording() as recorded:
                response = http.request("GET", url, params=query, headers=actor.headers)
            assert response.status_code == 200, f"{op.path} {query}: {response.text}"
            selects = [
                (sql, values)
                for (sql, _), values in zip(recorded.sent, recorded.values, strict=True)
                if sql.lstrip().upper().startswith("SELECT") and "vetify_enter" not in sql
            ]
            known = KNOWN.get((op.path, variant))
            calls.append(Call(op.path, f"{variant}, {page}", bool(params), known, selects))
            body = response.json()
            cursor = body["next_cursor"] if isinstance(body, dict) else None  # else not paged
            if cursor is None:
                break
    return calls


async def _explain(app_url: str, clinic: str, calls: list[Call]) -> list[Explained]:
    connection = await asyncpg.connect(plain_url(app_url))
    explained = []
    try:
        for call in calls:
            for sql, values in call.statements:
                async with connection.transaction():
                    await connection.execute("SELECT vetify_enter($1::uuid, NULL::uuid)", clinic)
                    raw = await connection.fetchval(
                        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *values
                    )
                plan = json.loads(raw)[0]
                top = plan["Plan"]
                explained.append(
                    Explained(
                        route=call.route,
                        variant=call.variant,
                        sql=sql,
                        paged=" LIMIT " in sql,
                        filtered=call.filtered,
                        known=call.known,
                        milliseconds=plan["Execution Time"],
                        buffers=top["Shared Hit Blocks"] + top["Shared Read Blocks"],
                        nodes=list(_nodes(top)),
                    )
                )
    finally:
        await connection.close()
    return explained


async def _owner(world: World, built: bigdata.Built) -> Actor:
    async with world.session() as session:
        user = await session.get_one(User, uuid.UUID(built.owner_id))
    return await world.actor(uuid.UUID(built.clinic_id), user)


@dataclass(frozen=True)
class Plans:
    built: bigdata.Built
    explained: list[Explained]
    checked_in: float


@pytest.fixture(scope="module")
def plans(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    stripe_api: FakeStripe,
    smtp_server: Relay,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[Plans]:
    database = asyncio.run(databases.clone(postgres_server, prefix="plans"))
    try:
        settings = stage_settings(
            database, redis_server, tmp_path_factory.mktemp("plans"), stripe_api, smtp_server
        )
        wrapper = keys.wrapper_from(settings)  # the served app's keys open what it sealed
        built = asyncio.run(bigdata.build(database.owner_url, SIZE, wrapper=wrapper))
        started = time.monotonic()
        with serving(settings) as (http, world):
            actor = http.run(_owner, world, built)
            calls = [call for op in lists() for call in _drive(http, actor, op)]
        explained = asyncio.run(_explain(database.app_url, built.clinic_id, calls))
        found = Plans(built, explained, round(time.monotonic() - started, 1))
        line = _report(found, pytestconfig.rootpath / "reports" / "plans.json")
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():  # printed past pytest's capture
            print(f"\n{line}")
        yield found
    finally:
        asyncio.run(databases.drop(database))


def _spread(milliseconds: list[float]) -> dict[str, float]:
    ordered = sorted(milliseconds)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(statistics.quantiles(ordered, n=20, method="inclusive")[-1], 3),
        "max": round(ordered[-1], 3),
    }


def _report(plans: Plans, path: Path) -> str:
    """Write reports/plans.json; the summary line."""
    every = _spread([e.milliseconds for e in plans.explained])
    unwaived = _spread([e.milliseconds for e in plans.explained if not e.known])
    summary = {
        "size": plans.built.size,
        "built_in_seconds": plans.built.seconds,
        "checked_in_seconds": plans.checked_in,
        "rows": plans.built.rows,
        "statements": len(plans.explained),
        "execution_ms": every,
        "execution_ms_without_known": unwaived,
        "buffers_max": max(e.buffers for e in plans.explained),
        "buffers_max_without_known": max(e.buffers for e in plans.explained if not e.known),
        "buffer_budget": BUFFERS,
    }
    line = (
        f"plans at {plans.built.size}: built in {plans.built.seconds} s, checked in"
        f" {plans.checked_in} s; {len(plans.explained)} statements, execution p50"
        f" {every['p50']} ms, p95 {every['p95']} ms, max {every['max']} ms (without KNOWN:"
        f" p95 {unwaived['p95']} ms, max {unwaived['max']} ms); buffers max"
        f" {summary['buffers_max']} ({summary['buffers_max_without_known']} without KNOWN)"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    statements = [asdict(e) | {"problems": e.problems()} for e in plans.explained]
    path.write_text(json.dumps(summary | {"explained": statements}, indent=2), encoding="utf-8")
    return line


@pytest.mark.parametrize("path", sorted(op.path for op in lists()))
def test_a_list_route_reads_by_index_within_its_buffers(plans: Plans, path: str) -> None:
    mine = [e for e in plans.explained if e.route == path]
    assert mine, f"{path}: no statement was recorded"
    problems = [f"{e.variant}: {problem}\n    {e.sql}" for e in mine for problem in e.problems()]
    assert not problems, f"{path} over {plans.built.size}:\n" + "\n".join(problems)
