"""The schema types of app/kit/types.py at their edges: the years 1900 and 2200 in and the
years either side out, "now" a client's clock may run ahead by, the day that has begun
somewhere, integers written with a zero fraction, NUL in a list, a breached password in any
case. (tests/unit/test_schemas.py holds the real request bodies to the same rules.)"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from app.kit.clock import utcnow
from app.kit.types import (
    CLOCK_SKEW,
    Date,
    Email,
    Id,
    Input,
    Password,
    PastDate,
    PastTimestamp,
    Timestamp,
)


def _valid(kind: Any, value: Any) -> Any:
    return TypeAdapter(kind).validate_python(value)


def _message(kind: Any, value: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        _valid(kind, value)
    (error,) = raised.value.errors()
    return str(error["msg"])


@pytest.mark.parametrize(
    ("kind", "inside", "outside"),
    [
        (
            Timestamp,
            ["1900-01-01T00:00:00Z", "2200-12-31T23:59:59Z"],
            ["1899-12-31T23:59:59Z", "2201-01-01T00:00:00Z"],
        ),
        (Date, ["1900-01-01", "2200-12-31"], ["1899-12-31", "2201-01-01"]),
    ],
)
def test_the_years_1900_to_2200_and_no_others(
    kind: Any, inside: list[str], outside: list[str]
) -> None:
    for value in inside:
        assert _valid(kind, value).year in (1900, 2200)
    for value in outside:
        assert _message(kind, value) == "Value error, must be between the years 1900 and 2200"


def test_a_past_timestamp_may_be_as_far_ahead_as_a_clients_clock_runs() -> None:
    now = utcnow()
    ahead = now + CLOCK_SKEW - dt.timedelta(seconds=30)
    assert _valid(PastTimestamp, ahead.isoformat()) == ahead
    beyond = now + CLOCK_SKEW + dt.timedelta(seconds=30)
    assert _message(PastTimestamp, beyond.isoformat()) == "Value error, must not be in the future"


def test_a_past_date_is_any_day_begun_somewhere_on_earth() -> None:
    first_to_begin = (utcnow() + dt.timedelta(hours=14)).date()
    assert _valid(PastDate, first_to_begin.isoformat()) == first_to_begin
    tomorrow = first_to_begin + dt.timedelta(days=1)
    assert _message(PastDate, tomorrow.isoformat()) == "Value error, must not be after today"


@pytest.mark.parametrize("value", ["2030-05-01T09:30", "0", "2030-05-01", " 2030-05-01T09:30:00Z"])
def test_a_timestamp_is_rfc_3339_text_only(value: str) -> None:
    assert _message(Timestamp, value).startswith("Value error, must be an RFC 3339 date-time")


@pytest.mark.parametrize("value", ["20300501", "2030-5-1", "2030-05-01T00:00:00Z"])
def test_a_date_is_rfc_3339_text_only(value: str) -> None:
    assert _message(Date, value) == "Value error, must be a date such as 2030-05-01"


@pytest.mark.parametrize("value", [1, 1.5, None, ["2030-05-01"]])
def test_dates_and_ids_are_never_numbers_or_anything_but_text(value: Any) -> None:
    for kind in (Date, Timestamp, Id):
        with pytest.raises(ValidationError):
            _valid(kind, value)


def test_an_email_is_kept_normalised() -> None:
    assert _valid(Email, "Ana@EXAMPLE.com") == "Ana@example.com"
    assert _message(Email, "ana@localhost").startswith("Value error, is not a valid email address:")


def test_a_breached_password_is_refused_in_any_case() -> None:
    # pragma: allowlist nextline secret - SecLists' common password, the point of the test
    for password in ("password1234", "PASSWORD1234", "PassWord1234"):
        with pytest.raises(ValidationError) as raised:
            _valid(Password, password)
        assert raised.value.errors()[0]["type"] == "breached_password"
    # pragma: allowlist nextline secret - a test user's passphrase
    assert _valid(Password, "a long enough password")


class Dose(Input):
    amounts: list[str]
    note: str = ""
    count: int = 0


@pytest.mark.parametrize(
    "body",
    [{"amounts": ["5 mg", "1\x00"]}, {"amounts": ["\x00"]}, {"amounts": [], "note": "a\x00b"}],
)
def test_nul_is_refused_in_a_list_as_in_a_string(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        Dose.model_validate(body)
    assert "must not contain the NUL character" in str(raised.value)


def test_text_without_nul_and_other_values_pass() -> None:
    dose = Dose.model_validate({"amounts": ["5 mg"], "note": "n", "count": 3})
    assert (dose.amounts, dose.note, dose.count) == (["5 mg"], "n", 3)
