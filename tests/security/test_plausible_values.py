"""Implausible values are refused: every date, time and number a client can send in a body has
a plausible range, and a value outside it is a 422 problem naming the field, with nothing
written (issue 15, defect 11: a pet born in 2200 and an appointment in 1900 were stored).

Generated from the OpenAPI document: every route with a JSON body, and every date, date-time,
number and integer in it, nested ones included. The ranges here are the domain's own word,
kept apart from the app so that the app cannot agree with itself; a new field of these kinds
without one fails ``test_every_date_and_number_has_a_plausible_range``. Hypothesis draws
values beyond each range: next to its edges and far off, inside and outside the years the
schema's pattern admits, in UTC and at other offsets. Where a bound is static the document
states it, so the schema fuzzer's negative cases cross it too (tests/contract/test_fuzz.py).
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from app.kit.clock import utcnow
from app.settings import Settings
from tests.harness import tally
from tests.harness.api import PROBLEM_JSON
from tests.harness.world import World
from tests.security.bodies import (
    WITH_BODY,
    Field,
    body_fields,
    names,
    ready,
    valid_body,
    with_value,
)
from tests.security.catalogue import ID_KINDS, Credentials, Route, credentials, explain, send
from tests.security.estate import fresh, furnish, rows_of
from tests.security.surface import census

HORIZON = dt.timedelta(days=400)
"""The appointment horizon this module configures: not the default, so the test shows the
service keeps to its setting."""
CLOCK_SKEW = dt.timedelta(minutes=5)
"""A client's clock may run this far ahead: a time it sends as "now" is not the future."""
TEN_YEARS = dt.timedelta(days=3653)
LATEST_OFFSET = dt.timedelta(hours=14)
"""UTC+14 (Kiribati): where a new day starts first."""
FIRST_MOMENT = dt.datetime(1900, 1, 1, tzinfo=dt.timezone(LATEST_OFFSET))
"""When 1900 began, where it began first: earlier is before 1900 wherever the clinic is."""
EARLIEST = dt.datetime(1000, 1, 2, tzinfo=dt.UTC)
LATEST = dt.datetime(9998, 12, 31, tzinfo=dt.UTC)
"""Drawn values stay within these (four-digit years at any offset); the schema's pattern
admits 1900 to 2200, so values on both sides of its edges are drawn too."""

Moment = dt.datetime | dt.date
Window = Callable[[dt.datetime, dict[str, Any]], tuple[Moment, Moment]]
"""(now, the object the field is in) -> the earliest and latest plausible value."""


def _happened(now: dt.datetime, item: dict[str, Any]) -> tuple[Moment, Moment]:
    return FIRST_MOMENT, now + CLOCK_SKEW


def _booked(now: dt.datetime, item: dict[str, Any]) -> tuple[Moment, Moment]:
    return now - HORIZON, now + HORIZON


def _given(item: dict[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(item["given_at"]).date()


TIMES: dict[str, Window] = {
    # What happened is not in the future.
    "measured_at": _happened,
    "visited_at": _happened,
    "given_at": _happened,
    # Born by today, wherever the clinic is.
    "date_of_birth": lambda now, item: (FIRST_MOMENT.date(), (now + LATEST_OFFSET).date()),
    # Booked within the service's horizon of now, before or after.
    "starts_at": _booked,
    "ends_at": _booked,
    # A vaccine lot expires, and the next dose falls due, within ten years of this dose; the
    # next dose not before it.
    "expiry_date": lambda now, item: (_given(item) - TEN_YEARS, _given(item) + TEN_YEARS),
    "next_due": lambda now, item: (_given(item), _given(item) + TEN_YEARS),
}
NUMBERS: dict[str, tuple[float, float]] = {
    # From a gram (what the column keeps: less would be stored as 0) to two tonnes.
    "weight_kg": (0.001, 2000),
    "temperature_c": (20, 50),
    "heart_rate_bpm": (1, 1000),
    "respiratory_rate_bpm": (1, 500),
    "default_duration_minutes": (5, 24 * 60),
    "duration_days": (1, 3650),
    "expires_in_days": (1, 3650),
    # A clinic's client retention: from a year to fifty (ADR 0031).
    "inactive_client_years": (1, 50),
    # How long a clinic keeps medical records: up to a century (ADR 0035).
    "record_retention_years": (1, 100),
}
"""The plausible range of each number, both ends included."""


def _ranged(field: Field) -> bool:
    return field.spec.get("format") in ("date", "date-time") or bool(
        field.types & {"number", "integer"}
    )


CASES = [(route, field) for route in WITH_BODY for field in body_fields(route) if _ranged(field)]
tally.size("plausible values", f"{len(CASES)} dates, times and numbers in request bodies")


def test_every_date_and_number_has_a_plausible_range() -> None:
    found = {field.name for _, field in CASES}
    assert found == set(TIMES) | set(NUMBERS), (
        f"no range for {sorted(found - set(TIMES) - set(NUMBERS))};"
        f" no such field: {sorted(set(TIMES) | set(NUMBERS) - found)}"
    )


def test_the_document_states_every_static_bound() -> None:
    """Numbers have theirs as minimum and maximum; dates and times the years (a pattern). The
    schema fuzzer reads them from the document and sends values beyond them."""
    wrong = []
    for route, field in CASES:
        spec = field.spec
        if field.name in NUMBERS:
            stated = (spec.get("minimum"), spec.get("maximum"))
            if stated != NUMBERS[field.name]:
                wrong.append(f"{route.label} {field.label}: states {stated}")
        elif "pattern" not in spec:
            wrong.append(f"{route.label} {field.label}: states no years")
    assert not wrong, "\n".join(wrong)


# -- values beyond the ranges -------------------------------------------------------------------
# Each strategy draws the values just beyond both edges often (Hypothesis alone seldom lands
# there in a few examples), and anything further off.
def _offsets() -> st.SearchStrategy[dt.timezone]:
    quarters = st.integers(-12 * 4, 14 * 4)
    return quarters.map(lambda n: dt.timezone(n * dt.timedelta(minutes=15)))


def _times_outside(low: dt.datetime, high: dt.datetime) -> st.SearchStrategy[str]:
    """Date-times before ``low`` or after ``high`` by a minute or more (time only moves on
    between drawing and sending, so a value after a bound relative to now stays after it)."""
    minute = dt.timedelta(minutes=1)
    moments = st.one_of(
        st.just(low - minute),
        st.just(high + minute),
        st.timedeltas(minute, low - EARLIEST).map(lambda by: low - by),
        st.timedeltas(minute, LATEST - high).map(lambda by: high + by),
    )
    return st.builds(lambda moment, zone: moment.astimezone(zone).isoformat(), moments, _offsets())


def _dates_outside(low: dt.date, high: dt.date) -> st.SearchStrategy[str]:
    day = dt.timedelta(days=1)
    days = st.one_of(
        st.just(low - day),
        st.just(high + day),
        st.dates(EARLIEST.date(), low - day),
        st.dates(high + day, LATEST.date()),
    )
    return days.map(dt.date.isoformat)


def _numbers_outside(low: float, high: float, *, integer: bool) -> st.SearchStrategy[Any]:
    if integer:
        return st.one_of(
            st.just(int(low) - 1),
            st.just(int(high) + 1),
            st.integers(-(10**12), int(low) - 1),
            st.integers(int(high) + 1, 10**12),
        )
    return st.one_of(
        st.just(math.nextafter(low, -math.inf)),
        st.just(math.nextafter(high, math.inf)),
        st.floats(-1e12, low, exclude_max=True),
        st.floats(high, 1e12, exclude_min=True),
        st.integers(-(10**12), math.ceil(low) - 1),
        st.integers(math.floor(high) + 1, 10**12),
    )


def _outside(field: Field, item: dict[str, Any], now: dt.datetime) -> st.SearchStrategy[Any]:
    if field.name in NUMBERS:
        low, high = NUMBERS[field.name]
        return _numbers_outside(low, high, integer="number" not in field.types)
    low_moment, high_moment = TIMES[field.name](now, item)
    if field.spec["format"] == "date":
        low_day = low_moment.date() if isinstance(low_moment, dt.datetime) else low_moment
        high_day = high_moment.date() if isinstance(high_moment, dt.datetime) else high_moment
        return _dates_outside(low_day, high_day)
    assert isinstance(low_moment, dt.datetime)
    assert isinstance(high_moment, dt.datetime)
    return _times_outside(low_moment, high_moment)


def _item(body: dict[str, Any], field: Field) -> dict[str, Any]:
    """The object the field is in (the body, or a nested one such as a vaccination)."""
    node: Any = body
    for part in field.path[:-1]:
        node = node[part]
    assert isinstance(node, dict)
    return node


# -- the requests -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def module_settings(module_settings: Settings) -> Settings:
    return Settings(**{**dict(module_settings), "appointment_horizon_days": HORIZON.days})


@dataclass
class Target:
    url: str
    caller: Credentials
    body: dict[str, Any]
    clinic_id: uuid.UUID


@pytest.fixture
async def target(module_client: httpx.AsyncClient, module_world: World, route: Route) -> Target:
    """The route in a furnished clinic of its own, as its owner; its example body is accepted
    (so that a refusal below is the drawn value's doing)."""
    world = module_world
    estate = await furnish(world, await world.clinic())
    ids = {ID_KINDS[n]: await fresh(world, estate.clinic, ID_KINDS[n]) for n in route.path_params}
    url = route.url(ids)
    await ready(world, estate, route)
    caller = await credentials(world, None if route.public else estate.clinic.owner, route)
    body = valid_body(route, estate)
    plain = await send(module_client, caller, route, url, body)
    assert plain.is_success, f"the example body alone: {explain(plain)}"
    return Target(url, caller, body, estate.clinic.id)


@pytest.mark.parametrize(("route", "field"), CASES, ids=[f"{r.label} {f.label}" for r, f in CASES])
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_an_implausible_value_is_refused_and_changes_nothing(
    module_client: httpx.AsyncClient,
    module_superuser_engine: AsyncEngine,
    target: Target,
    route: Route,
    field: Field,
    data: st.DataObject,
) -> None:
    body = with_value(target.body, field, None)
    value = data.draw(_outside(field, _item(body, field), utcnow()), label=field.label)
    engine = module_superuser_engine
    before = await census(engine), await rows_of(engine, target.clinic_id)

    response = await send(
        module_client, target.caller, route, target.url, with_value(body, field, value)
    )

    assert response.status_code == 422, f"{field.label}={value!r}: {explain(response)}"
    assert response.headers["content-type"] == PROBLEM_JSON
    assert names(response, field.path), f"{field.label}={value!r}: {explain(response)}"
    assert (await census(engine), await rows_of(engine, target.clinic_id)) == before
