"""The building blocks' schemas promise what their validators accept: no more, no less.

The OpenAPI document is built from these schemas and Schemathesis holds the service to it
(tests/contract/test_fuzz.py); here each rule is checked directly and fast, with Hypothesis
drawing values around its edges: for every value, pydantic accepts it exactly when the JSON
Schema (formats on, as ``jsonschema_rs`` reads them) does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError, create_model

from app.kit.types import INTEGRAL, Date, Email, Input, Name, ShortText, Timestamp, TimeZone

BLANKS = st.sampled_from(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2000\u2028\u3000")
TEXT = st.text(st.characters(exclude_categories=("Cs",)) | BLANKS | st.just("\x00"), max_size=8)
SPECIAL = st.sampled_from(["test", "TEST", "local", "localhost", "invalid", "onion", "arpa"])
EMAILS = (
    st.emails()
    | st.builds("{}@{}.{}".format, st.from_regex(r"[a-z0-9.]{1,8}", fullmatch=True), TEXT, SPECIAL)
    | st.builds("{}@{}".format, st.from_regex(r"[a-z]{1,8}", fullmatch=True), SPECIAL)
)
YEARS = st.integers(1, 9999).map(lambda year: f"{year:04d}")
TIMESTAMPS = st.builds(
    "{}-03-04T09:30{}{}".format,
    YEARS,
    st.sampled_from([":00", ":00.25", ""]),
    st.sampled_from(["Z", "+05:30", ""]),
) | st.sampled_from(["0", "1700000000", "2030-03-04 09:30:00Z", "2030-03-04"])
DATES = st.builds("{}-03-04".format, YEARS) | st.sampled_from(["0", "20300304", "2030-3-4"])
NUMBERS = st.integers(-10, 2000) | st.floats(-10, 2000) | st.booleans() | st.just("5")

CASES: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "name": (Name, TEXT | st.text(max_size=210)),
    "short text": (ShortText, TEXT),
    "email": (Email, EMAILS),
    "timestamp": (Timestamp, TIMESTAMPS),
    "date": (Date, DATES),
    "bounded integer": (Annotated[int, Field(ge=5, le=1440), INTEGRAL], NUMBERS),
    "time zone": (TimeZone, st.sampled_from(["UTC", "Europe/Lisbon", "utc", "Mars/Base"]) | TEXT),
}


def _accepts(model: type[Input], value: Any) -> bool:
    try:
        model.model_validate({"value": value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_and_validator_agree(case: str) -> None:
    """As in a request body: a field of an ``Input`` model (strict, with its NUL rule)."""
    kind, values = CASES[case]
    model = create_model("Probe", __base__=Input, value=(kind, ...))
    schema = model.model_json_schema()
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)

    @given(values)
    def agree(value: Any) -> None:
        promised = validator.is_valid({"value": value})
        assert _accepts(model, value) == promised, (
            f"{value!r}: the schema {'accepts' if promised else 'refuses'} it, "
            f"the validator does not ({json.dumps(schema['properties'])[:300]})"
        )

    agree()


def test_names_are_trimmed_after_their_length_is_checked() -> None:
    adapter: TypeAdapter[str] = TypeAdapter(Name)
    assert adapter.validate_python("  Rex  ") == "Rex"
    with pytest.raises(ValidationError, match="at most 200"):
        adapter.validate_python("x" + " " * 200)


def test_an_integer_may_be_written_with_a_zero_fraction() -> None:
    adapter: TypeAdapter[int] = TypeAdapter(Annotated[int, Field(ge=5), INTEGRAL])
    assert adapter.validate_python(30.0, strict=True) == 30
    assert type(adapter.validate_python(30.0, strict=True)) is int
    for refused in (30.5, True, "30", 4.0):
        with pytest.raises(ValidationError):
            adapter.validate_python(refused, strict=True)
