"""Text PostgreSQL cannot store is found wherever a request can carry it: in a JSON value (keys
included, nested in lists and objects) and in query parameters, names or values."""

from __future__ import annotations

import pytest

from app.kit.heads import unstorable_parameter
from app.kit.text import MESSAGE, refusal, storable, unstorable_at


@pytest.mark.parametrize("text", ["\x00", "a\x00b", "\ud800", "x\udfff"])
def test_nul_and_unpaired_surrogates_cannot_be_stored(text: str) -> None:
    assert not storable(text)


@pytest.mark.parametrize("text", ["", "plain", "\u202e\ufeff\uffff", "\U0001f600", "\\x00"])
def test_every_other_text_can(text: str) -> None:
    assert storable(text)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"name": "ok", "notes": "a\x00b"}, ["notes"]),
        ({"items": [{"dose": "5 mg"}, {"dose": "\ud800"}]}, ["items", 1, "dose"]),
        ({"outer": {"bad\x00key": 1}}, ["outer"]),
        (["fine", ["\x00"]], [1, 0]),
        ("\x00", []),
        # Found whatever else is still to be looked at (here a list, looked at first).
        ({"bad": "\x00", "later": ["ok", "fine"]}, ["bad"]),
    ],
)
def test_the_place_of_unstorable_text_in_a_json_value(
    value: object, where: list[str | int]
) -> None:
    assert unstorable_at(value) == where


def test_a_clean_json_value_has_none() -> None:
    assert unstorable_at({"a": [1, 2.5, None, True, "text", {"b": "c"}]}) is None


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (b"q=%00", "q"),
        (b"limit=5&q=a%00b", "q"),
        (b"a%00b=1", "a\\x00b"),  # the name itself: said escaped
        (b"%00", "\\x00"),  # a name alone, no "=": a parameter with a blank value
        (b"q=\x00", "q"),  # a raw NUL, as a lenient server may pass it on
        (b"limit=5&q=a\x00b", "q"),
        (b"%C3%A9=%00", "\u00e9"),  # a storable name is said as it is, not escaped
    ],
)
def test_the_query_parameter_holding_a_nul(query: bytes, name: str) -> None:
    assert unstorable_parameter(query) == name


@pytest.mark.parametrize("query", [b"", b"q=cat", b"q=%2500", b"q=100%25"])
def test_a_query_without_one(query: bytes) -> None:
    # "%2500" is the text "%00": storable, whatever it looks like.
    assert unstorable_parameter(query) is None


def test_the_refusal_names_the_place_as_every_422_does() -> None:
    problem = refusal(["body", "notes"])
    assert problem.status == 422
    assert problem.detail == "See errors for the fields at fault."
    assert [e.model_dump() for e in problem.errors] == [
        {"loc": ["body", "notes"], "msg": MESSAGE, "type": "unstorable_text"}
    ]
