"""The attack surface, read from the app's OpenAPI document (never a hand-kept list of routes).

Also: a census of the database's tables, to show that an attack changed nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.contract.snapshot import document, operations
from tests.harness.databases import sealed_texts

DOC = document()
API = "/api/v1/"
PUBLIC: dict[tuple[str, str], str] = {
    ("post", "/api/v1/auth/signup"): "creates a clinic and its owner: there is no caller yet",
    ("post", "/api/v1/auth/login"): "where a caller proves who they are",
    ("post", "/api/v1/auth/invitations/accept"): "the invitation token is the credential",
    ("post", "/api/v1/auth/password-reset"): "for who forgot their password: answered alike"
    " for any address, the link goes to the address's mailbox",
    ("post", "/api/v1/auth/password-reset/complete"): "the mailed reset link's token is the"
    " credential",
    ("post", "/api/v1/billing/webhooks/stripe"): "Stripe's signature over the body is the"
    " credential (tests/contract/stripe/test_signatures.py)",
}
"""The only routes a caller without credentials may use, and why."""


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def url(self) -> str:
        """The path with every path parameter a random UUID."""
        url = self.path
        for parameter in self.spec.get("parameters", []):
            if parameter["in"] == "path":
                url = url.replace("{" + parameter["name"] + "}", str(uuid.uuid4()))
        assert "{" not in url, f"{self.label}: a path parameter is not declared"
        return url

    @property
    def has_body(self) -> bool:
        return "requestBody" in self.spec


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = DOC["components"]["schemas"][name]
    return schema


def types(schema: dict[str, Any]) -> set[str]:
    """Every JSON type a (possibly ``anyOf``/``oneOf``/``$ref``) schema allows."""
    schema = resolve(schema)
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, []):
            found |= types(part)
    return found


def _lists_items(spec: dict[str, Any]) -> bool:
    """Whether the 200 response is a page: an object with an array of ``items``."""
    content = spec.get("responses", {}).get("200", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return False
    items = resolve(schema).get("properties", {}).get("items")
    return items is not None and "array" in types(items)


def api_operations() -> list[Operation]:
    return [Operation(m, p, spec) for m, p, spec in operations(DOC) if p.startswith(API)]


def protected_operations() -> list[Operation]:
    return [op for op in api_operations() if (op.method, op.path) not in PUBLIC]


def list_routes() -> list[Operation]:
    """``GET`` routes under /api/v1 without path parameters that answer a page of items."""
    return [
        op
        for op in api_operations()
        if op.method == "get" and "{" not in op.path and _lists_items(op.spec)
    ]


def _has_pattern(schema: dict[str, Any]) -> bool:
    schema = resolve(schema)
    return "pattern" in schema or any(
        _has_pattern(part) for key in ("anyOf", "oneOf", "allOf") for part in schema.get(key, [])
    )


def string_query_parameters(op: Operation, *, with_pattern: bool = False) -> list[str]:
    """Query parameters that take a string (optionally: only those constrained by a pattern)."""
    return [
        parameter["name"]
        for parameter in op.spec.get("parameters", [])
        if parameter["in"] == "query"
        and "string" in types(parameter.get("schema", {}))
        and (not with_pattern or _has_pattern(parameter.get("schema", {})))
    ]


T = TypeVar("T")

METERING = frozenset({"clinic_usage"})
"""Tables the service writes on its own clock, whatever a request said: the usage flusher adds
each clinic's requests every VETIFY_USAGE_FLUSH_SECONDS (app/observability/usage.py), so a
census across a flush would change with no request to blame."""


TRAIL = frozenset({"audit_events", "audit_heads", "security_events"})
"""The audit trail's tables (ADR 0027): a request that changes a row adds an event whatever it
changed the row to, one that changes nothing adds none, and one refused (a wrong password or
code, a permission, another clinic's id) adds its security event (app/audit/security.py). So
what a hostile request adds there says nothing of what it did to the data; the trail's own
suites hold what it records (tests/integration/test_security_trail.py)."""


def outside_the_trail(tables: Mapping[str, T]) -> dict[str, T]:
    """A census or a clinic's rows (by table) less the trail's tables."""
    return {table: found for table, found in tables.items() if table not in TRAIL}


async def census(engine: AsyncEngine) -> dict[str, int]:
    """Every table in the ``public`` schema but :data:`METERING`'s with its row count (as the
    superuser: all clinics)."""
    async with engine.connect() as connection:
        tables = [
            table
            for table in await connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            )
            if table not in METERING
        ]
        # One statement, so that suites may take a census around every request.
        counts = " UNION ALL ".join(
            f"SELECT '{table}', count(*) FROM public.\"{table}\"" for table in tables
        )
        return {table: count for table, count in (await connection.execute(text(counts))).all()}


async def horizon(engine: AsyncEngine) -> int:
    """The id the next transaction will be given: a row written after this call has an ``xmin``
    at or above it. Taken before a request, it tells the rows the request wrote from those that
    held the same value before (a module's database keeps every earlier test's rows)."""
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            )
        )


async def stored_as_given(engine: AsyncEngine, value: str, *, since: int) -> list[str]:
    """The tables holding ``value`` exactly in a row written since the :func:`horizon` ``since``,
    as a whole column or inside a JSON or array one, or as a sealed value (or a string of one)
    once opened."""
    async with engine.connect() as connection:
        tables = (
            await connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            )
        ).all()
        # xmin is a 32-bit transaction id; a test cluster never reaches its wraparound.
        matches = " UNION ALL ".join(
            f"SELECT '{table}' FROM public.\"{table}\" t WHERE t.xmin::text::bigint >= :since"
            " AND jsonb_path_exists(to_jsonb(t), '$.** ? (@ == $v)',"
            " jsonb_build_object('v', CAST(:v AS text)))"
            for table in tables
        )
        found = set((await connection.scalars(text(matches), {"v": value, "since": since})).all())
    plain = await asyncpg.connect(engine.url.set(drivername="postgresql").render_as_string(False))
    try:
        sealed = await sealed_texts(plain, since=since)
        found |= {table for table, texts in sealed if value in texts}
    finally:
        await plain.close()
    return sorted(found)
