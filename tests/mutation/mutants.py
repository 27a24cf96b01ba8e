"""The mutants of one source file, made by mutmut's own operators (mutmut 3, ADR 0017).

mutmut 3 runs a new pytest session for each mutant (forked from its own process), and ours
start PostgreSQL, Redis and a migrated template database per session. So we take mutmut's
mutation generation (its libcst operators, its `# pragma: no mutate` handling and its
`[tool.mutmut]` settings in pyproject.toml) and apply each mutant to the running process
instead: `tests/mutation/worker.py` swaps the `__code__` of the one function it changes.

Each mutant changes one node inside one top-level function or method body, as mutmut 3's own
trampolines do (module and class bodies, decorated functions and default values are left
alone: they run at import time, and a code swap cannot reach them).
"""

from __future__ import annotations

import difflib
import hashlib
import re
import types
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import libcst as cst
from libcst.metadata import (
    CodePosition,
    CodeRange,
    MetadataWrapper,
    ParentNodeProvider,
    PositionProvider,
)
from mutmut.mutation.file_mutation import MutationVisitor, OuterFunctionProvider
from mutmut.mutation.mutators import mutation_operators
from mutmut.mutation.pragma_handling import get_ignored_lines

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    # Stable across unrelated edits: the function's name and what the mutation changes, not
    # a line number (equivalent.toml is keyed by it).
    key: str
    package: str
    file: str
    line: int
    end_line: int
    function: str
    diff: str
    source: str
    # Set when the mutant is equivalent by a rule (no test can tell it apart): not run.
    equivalent: str = ""
    # The lines of the statement the node is in (of a compound statement, its header up to
    # the node): coverage sees a multi-line statement only on the lines where Python reports
    # line events, often its first alone, so a test that runs the statement may record none
    # of the node's own lines (the second part of an implicitly concatenated string).
    statement: tuple[int, int] | None = None

    def lines(self) -> range:
        first, last = self.statement or (self.line, self.end_line)
        return range(min(first, self.line), max(last, self.end_line) + 1)


def _qualnames(module: cst.Module) -> dict[cst.FunctionDef, str]:
    names: dict[cst.FunctionDef, str] = {}
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef):
            names[statement] = statement.name.value
        elif isinstance(statement, cst.ClassDef) and isinstance(statement.body, cst.IndentedBlock):
            for member in statement.body.body:
                if isinstance(member, cst.FunctionDef):
                    names[member] = f"{statement.name.value}.{member.name.value}"
    return names


_SQL = re.compile(
    r"^[rR]?(['\"])\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|GRANT|REVOKE|SET|IF|DO|"
    r"WITH|COMMENT)\b",
    re.IGNORECASE,
)
# Quoted literals and names, and bind parameters' names: their case is theirs.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|:\w+")


def _equivalent(before: str, after: str) -> str:
    """Why the mutant cannot differ, for the mutants a rule settles: a statement of SQL whose
    case changes outside its quoted literals and names and its parameters (PostgreSQL folds
    the rest)."""
    body = before[1:-1] if before[:1] in "'\"" else before[2:-1]
    changed = after[1:-1] if after[:1] in "'\"" else after[2:-1]
    if (
        _SQL.match(before)
        and before != after
        and body.lower() == changed.lower()
        and _QUOTED.findall(body) == _QUOTED.findall(changed)
    ):
        return "SQL keywords and unquoted names are case-insensitive"
    return ""


def _statement_lines(
    node: cst.CSTNode,
    parents: Mapping[cst.CSTNode, cst.CSTNode],
    positions: Mapping[cst.CSTNode, CodeRange],
) -> tuple[int, int] | None:
    """The first and last line of the statement `node` is in; of a compound statement (the
    node in its header: a condition, an iterable), its first line to the node's last."""
    statement: cst.CSTNode | None = node
    while statement is not None and not isinstance(
        statement, cst.BaseSmallStatement | cst.BaseCompoundStatement
    ):
        statement = parents.get(statement)
    if statement is None:
        return None
    where = positions[statement]
    if isinstance(statement, cst.BaseCompoundStatement):
        return (where.start.line, positions[node].end.line)
    return (where.start.line, where.end.line)


def _at(position: CodePosition) -> tuple[int, int]:
    return (position.line, position.column)


def _splice(code: str, offsets: list[int], where: CodeRange, before: str, after: str) -> str | None:
    # Replacing the node's text is what libcst's deep_replace would print, thousands of times
    # faster; where the node's own rendering differs from its text, deep_replace is used.
    start = offsets[where.start.line - 1] + where.start.column
    end = offsets[where.end.line - 1] + where.end.column
    if code[start:end] != before:
        # libcst prints a node's continuation lines relative to its own block.
        line = code[offsets[where.start.line - 1] : offsets[where.start.line]]
        indent = line[: len(line) - len(line.lstrip())]
        before, after = (_indented(text, indent) for text in (before, after))
        if code[start:end] != before:
            return None
    return code[:start] + after + code[end:]


def _indented(text: str, indent: str) -> str:
    return "\n".join(
        (indent + line if line and number else line) for number, line in enumerate(text.split("\n"))
    )


def package_of(file: str) -> str:
    return str(Path(file).parent)


def mutants_of(file: str, code: str | None = None) -> list[Mutant]:
    """Every mutant of `file` (a path relative to the repository; its text unless `code` is
    given), in source order."""
    code = (ROOT / file).read_text() if code is None else code
    wrapper = MetadataWrapper(cst.parse_module(code))
    visitor = MutationVisitor(mutation_operators, get_ignored_lines(file, code, wrapper))
    wrapper.visit(visitor)
    positions = wrapper.resolve(PositionProvider)
    outer = wrapper.resolve(OuterFunctionProvider)
    parents = wrapper.resolve(ParentNodeProvider)
    module = wrapper.module
    qualnames = _qualnames(module)
    original = code.splitlines(keepends=True)
    offsets = [0]
    for text in original:
        offsets.append(offsets[-1] + len(text))
    seen: Counter[str] = Counter()
    found: list[Mutant] = []
    for mutation in visitor.mutations:
        function = outer.get(mutation.original_node)
        if not isinstance(function, cst.FunctionDef) or function not in qualnames:
            continue
        where = positions[mutation.original_node]
        # A parameter's default is evaluated once, at definition: not in the function's code.
        parameters = positions[function.params]
        if _at(parameters.start) <= _at(where.start) and _at(where.end) <= _at(parameters.end):
            continue
        qualname = qualnames[function]
        before = module.code_for_node(mutation.original_node)
        after = module.code_for_node(mutation.mutated_node)
        digest = hashlib.sha256(f"{qualname}\0{before}\0{after}".encode()).hexdigest()[:12]
        key = f"{file}::{qualname}::{digest}"
        seen[key] += 1
        if seen[key] > 1:
            key = f"{key}.{seen[key]}"
        source = _splice(code, offsets, where, before, after)
        if source is None:
            replaced = module.deep_replace(mutation.original_node, mutation.mutated_node)
            assert isinstance(replaced, cst.Module)
            source = replaced.code
        diff = "".join(
            difflib.unified_diff(
                original, source.splitlines(keepends=True), f"a/{file}", f"b/{file}", n=1
            )
        )
        found.append(
            Mutant(
                equivalent=_equivalent(before, after),
                key=key,
                package=package_of(file),
                file=file,
                line=where.start.line,
                end_line=where.end.line,
                function=qualname,
                diff=diff,
                source=source,
                statement=_statement_lines(mutation.original_node, parents, positions),
            )
        )
    return found


def function_code(module_code: types.CodeType, qualname: str) -> types.CodeType | None:
    """The code object of the function `qualname` compiled inside `module_code`."""
    stack = [module_code]
    while stack:
        code = stack.pop()
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                if constant.co_qualname == qualname:
                    return constant
                stack.append(constant)
    return None
