"""The audit trail's CSV cells (app/audit/export.py): a value that a spreadsheet would read as a
formula is led by ``'`` (OWASP, CSV injection), whichever field it is in; other values as given.
The integration tests send the hostile text through a User-Agent; a tab or a carriage return
cannot get there (the trail keeps only a User-Agent's printable characters), so here."""

from __future__ import annotations

import csv
import io

import pytest

from app.audit import export


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_value_starting_a_formula_is_text(start: str) -> None:
    value = f"{start}1+1"
    assert export._cell(value) == f"'{value}"
    assert export._cell([value]) == f"'{value}"


@pytest.mark.parametrize(
    ("value", "cell"),
    [(None, ""), (7, "7"), ("Mozilla/5.0", "Mozilla/5.0"), (["a", "b"], "a b"), ([], "")],
)
def test_other_values_are_as_given(value: object, cell: str) -> None:
    assert export._cell(value) == cell


def test_every_cell_is_quoted_so_none_starts_inside_another() -> None:
    written = export._csv_lines([["a,=1+1", 'say "=2"', "'=3"]])
    assert written == '"a,=1+1","say ""=2""","\'=3"\r\n'
    assert next(csv.reader(io.StringIO(written))) == ["a,=1+1", 'say "=2"', "'=3"]
