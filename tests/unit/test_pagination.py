"""Keyset cursors: what a page hands out decodes back to the same sort key; anything else is 422."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import load_only

from app.appointments.models import Appointment
from app.audit.models import AuditEvent
from app.kit.pagination import FOREIGN_CURSOR, _columns_of, _decode, encode_cursor, paginate
from app.kit.problems import InvalidInput
from app.pets.models import Pet
from app.pets.schemas import PetOut, PetStored

BY_START = [Appointment.starts_at, Appointment.id]
BY_ID = [Pet.id]
BY_SEQ = [AuditEvent.seq]

aware = st.datetimes(
    min_value=dt.datetime(1900, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-3, minutes=-30))]),
)


def _raw(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@given(aware, st.uuids())
def test_round_trip_datetime_and_id(starts_at: dt.datetime, id_: uuid.UUID) -> None:
    cursor = encode_cursor([starts_at, id_])
    assert _decode(cursor, BY_START) == [starts_at, id_]
    assert _decode(cursor, BY_START)[0].utcoffset() == starts_at.utcoffset()


@given(st.uuids())
def test_round_trip_id(id_: uuid.UUID) -> None:
    cursor = encode_cursor([id_])
    assert _decode(cursor, BY_ID) == [id_]


@given(st.integers(0, 2**63 - 1))
def test_round_trip_integer(seq: int) -> None:
    assert _decode(encode_cursor([seq]), BY_SEQ) == [seq]


@pytest.mark.parametrize(
    "sent", ["", "+1", "-1", " 1", "1 ", "1.0", "1e3", "١٢", "0x10", str(2**63), "9" * 40]
)
def test_an_integer_key_is_plain_digits_of_a_bigint(sent: str) -> None:
    with pytest.raises(InvalidInput):
        _decode(_raw([sent]), BY_SEQ)


@given(aware, st.uuids())
def test_cursor_is_url_safe(starts_at: dt.datetime, id_: uuid.UUID) -> None:
    cursor = encode_cursor([starts_at, id_])
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(cursor) <= 200  # CursorParam's max_length


@pytest.mark.parametrize(
    ("cursor", "columns"),
    [
        pytest.param("", BY_ID, id="empty"),
        pytest.param("!!!", BY_ID, id="not-base64"),
        pytest.param("a", BY_ID, id="bad-padding"),
        pytest.param(_raw({"id": str(uuid.uuid4())}), BY_ID, id="object"),
        pytest.param(_raw({str(uuid.uuid4()): 1}), BY_ID, id="object-keyed-by-an-id"),
        pytest.param(_raw([]), BY_ID, id="too-short"),
        pytest.param(_raw([str(uuid.uuid4())]), BY_START, id="one-for-two"),
        pytest.param(_raw([str(uuid.uuid4())] * 2), BY_ID, id="two-for-one"),
        pytest.param(_raw(["yesterday", str(uuid.uuid4())]), BY_START, id="bad-datetime"),
        pytest.param(_raw(["2030-01-01T00:00:00Z", "nope"]), BY_START, id="bad-uuid"),
        pytest.param(_raw([None]), BY_ID, id="null-uuid"),
        pytest.param(_raw([1, str(uuid.uuid4())]), BY_START, id="number-datetime"),
        pytest.param(_raw([1]), BY_ID, id="number-uuid"),
        pytest.param(_raw([[str(uuid.uuid4())]]), BY_ID, id="list-uuid"),
        pytest.param(_raw([{}]), BY_ID, id="object-uuid"),
        pytest.param(_raw([True]), BY_ID, id="bool-uuid"),
    ],
)
def test_bad_cursor_is_invalid_input(cursor: str, columns: list[Any]) -> None:
    with pytest.raises(InvalidInput) as raised:
        _decode(cursor, columns)
    assert raised.value.detail == FOREIGN_CURSOR == "The cursor is not one this service issued."


@given(st.text())
def test_garbage_text_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput):
        _decode(cursor, BY_START)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(json_values)
def test_any_json_decodes_or_is_invalid_input(value: Any) -> None:
    """A cursor of the URL-safe alphabet gets through the query check, so this is client input."""
    try:
        decoded = _decode(_raw(value), BY_ID)
    except InvalidInput:
        return
    assert len(decoded) == 1
    assert isinstance(decoded[0], uuid.UUID)


def test_a_page_of_an_entity_whose_schema_reads_only_columns_selects_those_columns() -> None:
    query = _columns_of(select(Pet).where(Pet.deceased.is_(False)), PetStored, BY_ID)
    assert [c["name"] for c in query.column_descriptions] == list(PetStored.model_fields)
    assert "WHERE pets.deceased IS false" in str(query)


def test_the_order_is_selected_too_when_the_schema_does_not_read_it() -> None:
    class Named(BaseModel):
        id: uuid.UUID
        name: str

    query = _columns_of(select(Pet), Named, [Pet.created_at, Pet.id])
    assert [c["name"] for c in query.column_descriptions] == ["id", "name", "created_at"]


class _Computed(BaseModel):
    id: uuid.UUID
    owner_name: str  # not a column of pets


@pytest.mark.parametrize(
    ("query", "schema"),
    [
        (select(Pet), _Computed),  # a field that is no column: the entity's objects
        (select(Pet).options(load_only(Pet.id, Pet.name)), PetOut),  # options need the entity
        (select(Pet.id, Pet.name), PetOut),  # columns already
    ],
    ids=["a field that is no column", "loader options", "columns already"],
)
def test_other_queries_are_left_as_they_are(query: Any, schema: type[BaseModel]) -> None:
    assert _columns_of(query, schema, BY_ID) is query


class _Rows:
    """What ``session.execute`` answers, for a query of several columns."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def all(self) -> list[Any]:
        return self.rows


class _Session:
    """Answers ``rows`` to any statement, keeping the statements."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.statements: list[Any] = []

    async def execute(self, statement: Any) -> _Rows:
        self.statements.append(statement)
        return _Rows(self.rows)


def _sql(statement: Any) -> str:
    return " ".join(str(statement.compile(compile_kwargs={"literal_binds": True})).split())


async def test_a_page_reads_one_row_past_its_limit_and_no_more() -> None:
    """The database is asked for ``limit + 1`` rows (the one past the page says a next page
    exists); without the bound a page of 20 would read a whole table into memory."""
    rows = [type("Row", (), {"id": uuid.UUID(int=i), "name": f"n{i}"})() for i in range(4)]
    session = _Session(rows)
    page, cursor = await paginate(session, select(Pet.id, Pet.name), BY_ID, None, 3)
    assert _sql(session.statements[0]).endswith("ORDER BY pets.id LIMIT 4")
    assert (page, cursor) == (rows[:3], encode_cursor([uuid.UUID(int=2)]))
    following = _Session(rows[3:])
    last, end = await paginate(following, select(Pet.id, Pet.name), BY_ID, cursor, 3)
    assert (last, end) == (rows[3:], None)
    assert f"WHERE (pets.id) > ('{uuid.UUID(int=2).hex}') ORDER BY" in _sql(following.statements[0])
