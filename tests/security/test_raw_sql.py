"""Raw SQL review: every place in app/ and migrations/ that builds SQL text from pieces.

Statements are built with SQLAlchemy expressions, or as constant text with bound parameters
(``text("... :id")``). SQL text made with an f-string, ``%``, ``.format()`` or ``+`` (or a
variable holding such text, or any non-constant ``text(...)``) and handed to ``text``,
``literal_column``, ``exec_driver_sql``, ``execute``/``executemany`` or asyncpg's ``fetch*`` is
a site where an injection could live. Each one must be in ``REVIEWED`` with why its pieces
cannot come from a client; a new one fails with its file:line until it is reviewed.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("app", "migrations")
SINKS = {
    "text",
    "literal_column",
    "exec_driver_sql",
    "execute",
    "executemany",
    "fetch",
    "fetchrow",
    "fetchval",
}
ANY_NON_CONSTANT = {"text", "literal_column", "exec_driver_sql"}
"""Sinks that take SQL text only, so any argument but a literal is built text."""

REVIEWED: dict[tuple[str, str], tuple[int, str]] = {
    ("app/privacy/retention.py", "each_clinic"): (
        1,
        "the query of the clinics to go through: a constant of its caller (the retention"
        " policies' and app/privacy/departure.py CLINICS), never built from input",
    ),
    ("app/db/rls.py", "enable_tenant_rls"): (
        3,
        "DDL for a table name a migration passes as a constant, with the constant tenant rule",
    ),
    ("app/db/migrate.py", "rls_released"): (
        2,
        "ALTER TABLE for table names a migration passes as constants, quoted by identifier()",
    ),
    ("app/db/rls.py", "grant"): (
        1,
        "GRANT with constant privileges to the service role, quoted by identifier()",
    ),
    ("migrations/versions/20261128_0001_initial_schema.py", "_security"): (
        4,
        "policies and grants built from the constant tenant and user settings of app/db/rls.py"
        " and the service role, quoted by identifier()",
    ),
    ("migrations/versions/20261128_0001_initial_schema.py", "_record_lock"): (
        1,
        "a trigger per table of a constant tuple (vaccinations, prescriptions)",
    ),
    ("migrations/versions/20261128_0001_initial_schema.py", "downgrade"): (
        1,
        "DROP TYPE for each enum of a constant tuple",
    ),
    ("app/audit/models.py", "<module>"): (
        1,
        "the chain's GENESIS as a bytea literal: a constant number of zero bytes",
    ),
    ("migrations/versions/20261206_0015_audit_retention.py", "upgrade"): (
        2,
        "the GENESIS bytea default (constant) and the REVOKE naming the service role vetify"
        " migrate configures, as rls.grant does",
    ),
    ("migrations/versions/20261206_0015_audit_retention.py", "downgrade"): (
        1,
        "the REVOKE naming the service role vetify migrate configures, as rls.grant does",
    ),
    ("migrations/versions/20261201_0005_billing.py", "_procrastinate"): (
        1,
        "GRANT USAGE on the schema's sequences to the service role, quoted by identifier()",
    ),
    ("migrations/versions/20261201_0005_billing.py", "downgrade"): (
        3,
        "DROP of procrastinate's tables and types (constant tuples) and of its functions, by the"
        " signatures PostgreSQL's own catalogue prints (regprocedure)",
    ),
    ("migrations/versions/20261205_0008_auth_epochs.py", "upgrade"): (
        2,
        "GRANT EXECUTE to the service role, quoted by identifier(); a trigger per table and"
        " change of the constant CLINIC_WATCH",
    ),
    ("migrations/versions/20261205_0008_auth_epochs.py", "downgrade"): (
        1,
        "DROP TRIGGER on each table of the constant CLINIC_WATCH and the two of this migration",
    ),
}
"""(file, function) -> (how many sites, why the built text is safe). Reviewed by a person."""


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    function: str
    sink: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} in {self.function}(): SQL text built for {self.sink}()"


def _is_built(node: ast.expr, built_names: set[str]) -> bool:
    """Whether an expression is text made from pieces at run time."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return _is_text(node.left) or _is_text(node.right) or _is_built(node.left, built_names)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in {"format", "join"} and _is_text(node.func.value)
    if isinstance(node, ast.Name):
        return node.id in built_names
    return False


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _sink(call: ast.Call) -> str | None:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name if name in SINKS else None


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.function = "<module>"
        self.built: set[str] = set()
        self.sites: list[Site] = []

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, outer_built = self.function, self.built
        self.function, self.built = node.name, set()
        # Names that hold built text anywhere in the function (assignments first).
        for child in ast.walk(node):
            if isinstance(child, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                value = child.value
                if value is not None and (
                    _is_built(value, self.built) or isinstance(child, ast.AugAssign)
                ):
                    self.built |= {t.id for t in targets if isinstance(t, ast.Name)}
        self.generic_visit(node)
        self.function, self.built = outer, outer_built

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_Call(self, node: ast.Call) -> None:
        sink = _sink(node)
        if sink is not None and node.args:
            argument = node.args[0]
            if _is_built(argument, self.built) or (
                sink in ANY_NON_CONSTANT and not _is_text(argument)
            ):
                self.sites.append(Site(self.path, node.lineno, self.function, sink))
        self.generic_visit(node)


def find_sites(source: str, path: str) -> list[Site]:
    finder = _Finder(path)
    finder.visit(ast.parse(source, filename=path))
    return finder.sites


def all_sites() -> list[Site]:
    sites = []
    for folder in SCANNED:
        for file in sorted((ROOT / folder).rglob("*.py")):
            relative = file.relative_to(ROOT).as_posix()
            sites += find_sites(file.read_text(encoding="utf-8"), relative)
    return sites


def unreviewed(sites: list[Site], *, stale: bool = True) -> list[str]:
    """Sites beyond what ``REVIEWED`` allows, and (``stale``) reviewed ones that are gone."""
    counts = Counter((site.path, site.function) for site in sites)
    problems = [
        str(site)
        for site in sites
        if counts[(site.path, site.function)] > REVIEWED.get((site.path, site.function), (0, ""))[0]
    ]
    problems += [
        f"{path} {function}(): reviewed for {count} sites, has {counts[(path, function)]};"
        " update REVIEWED"
        for (path, function), (count, _) in REVIEWED.items()
        if stale and counts[(path, function)] < count
    ]
    return problems


def test_every_site_that_builds_sql_text_is_reviewed() -> None:
    problems = unreviewed(all_sites())
    assert not problems, (
        "SQL text built from pieces, not reviewed (use bound parameters or SQLAlchemy"
        " expressions; or add it to REVIEWED with the reason its pieces are safe):\n"
        + "\n".join(problems)
    )


PLANTED = """
from sqlalchemy import text


async def by_name(session, name):
    await session.execute(text(f"SELECT * FROM pets WHERE name = '{name}'"))


async def by_id(connection, pet_id):
    sql = "SELECT * FROM pets WHERE id = %s" % pet_id
    await connection.execute(sql)
    await connection.fetch("SELECT * FROM pets WHERE id = " + pet_id)
    await connection.exec_driver_sql("DELETE FROM pets WHERE id = {}".format(pet_id))
    query = "SELECT 1"
    await connection.execute(text(query))


async def fine(session, pet_id):
    await session.execute(text("SELECT * FROM pets WHERE id = :id"), {"id": pet_id})
"""


def test_a_planted_site_is_found_with_its_file_and_line() -> None:
    sites = find_sites(PLANTED, "app/pets/planted.py")

    assert [str(site).split(" in ")[0] for site in sites] == [
        "app/pets/planted.py:6",
        "app/pets/planted.py:11",
        "app/pets/planted.py:12",
        "app/pets/planted.py:13",
        "app/pets/planted.py:15",
    ]
    assert unreviewed(sites, stale=False) == [str(site) for site in sites]
    assert all(site.function != "fine" for site in sites)
