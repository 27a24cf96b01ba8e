"""Strictness at the API boundary, with the real request schemas validated in python mode.

FastAPI hands pydantic the parsed JSON (``model_validate(dict)``), so that is what is used here.
"""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from enum import StrEnum
from typing import Any, get_args

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import app
from app.appointments.models import Status
from app.appointments.schemas import AppointmentIn, AppointmentTypeIn, StatusIn
from app.auth.models import Role
from app.clinics.schemas import SignupIn
from app.customers.schemas import ConsentsIn, CustomerIn, CustomerPatch
from app.kit.types import Input
from app.pets.models import Sex, Species
from app.pets.schemas import PetIn
from app.records.schemas import RecordIn, VaccinationIn
from app.staff.schemas import InvitationIn, StaffPatch

ID = str(uuid.uuid4())
WHEN = "2030-05-01T09:30:00+01:00"
PAST = "2024-05-01T09:30:00+01:00"
PET = {"customer_id": ID, "name": "Rex", "species": "dog"}
CUSTOMER = {"first_name": "Ana", "last_name": "Silva"}
APPOINTMENT = {"pet_id": ID, "vet_id": ID, "starts_at": WHEN}
RECORD = {"pet_id": ID}
# A dose given at the start of 2024: its lot's expiry and next due date within ten years of it.
VACCINATION = {"vaccine": "Rabies", "given_at": "2024-01-01T10:00:00Z"}
SIGNUP = {
    "clinic_name": "Happy Paws",
    "owner_name": "Ana Silva",
    "email": "ana@example.com",
    # pragma: allowlist nextline secret - a test user's passphrase
    "password": "a long enough password",
}


def _input_models() -> list[type[BaseModel]]:
    for module in pkgutil.iter_modules(app.__path__):
        if module.ispkg:
            try:
                importlib.import_module(f"app.{module.name}.schemas")
            except ModuleNotFoundError:
                continue
    found: list[type[BaseModel]] = []
    todo = [Input]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("app."):
                found.append(sub)
    return sorted(set(found), key=lambda m: m.__name__)


INPUTS = _input_models()


def _id(value: Any) -> str:
    if isinstance(value, type):
        return value.__name__
    return "" if isinstance(value, dict) else str(value)


def _error_locs(model: type[BaseModel], payload: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    return [tuple(e["loc"]) for e in caught.value.errors()]


@pytest.mark.parametrize(
    ("model", "payload"),
    [
        (PetIn, PET),
        (PetIn, {**PET, "date_of_birth": "2020-02-29", "microchip": "985112345678901"}),
        (CustomerIn, {**CUSTOMER, "email": "ana@example.com", "phone": "+351912345678"}),
        (AppointmentIn, APPOINTMENT),
        (AppointmentIn, {**APPOINTMENT, "starts_at": "2030-05-01T09:30:00Z"}),
        (RecordIn, {**RECORD, "heart_rate_bpm": 80, "weight_kg": 12, "visited_at": PAST}),
        (VaccinationIn, {**VACCINATION, "next_due": "2024-01-01", "expiry_date": "2023-06-30"}),
        (VaccinationIn, {**VACCINATION, "next_due": "2033-12-31", "expiry_date": "2014-01-02"}),
        (SignupIn, SIGNUP),
        (SignupIn, {**SIGNUP, "timezone": "America/Argentina/Buenos_Aires"}),
    ],
    ids=_id,
)
def test_valid_payload_accepted(model: type[BaseModel], payload: dict[str, Any]) -> None:
    model.model_validate(payload)


BAD = [
    ("bool-for-int", RecordIn, RECORD, "heart_rate_bpm", False),
    ("bool-for-int-2", AppointmentTypeIn, {"name": "Consult"}, "default_duration_minutes", True),
    ("bool-for-float", RecordIn, RECORD, "weight_kg", True),
    ("number-for-string", CustomerIn, CUSTOMER, "first_name", 42),
    ("float-for-string", PetIn, PET, "name", 1.5),
    ("number-for-id", PetIn, PET, "customer_id", 12345),
    ("number-for-timestamp", AppointmentIn, APPOINTMENT, "starts_at", 1_900_000_000),
    ("number-for-date", PetIn, PET, "date_of_birth", 20200101),
    ("naive-timestamp", AppointmentIn, APPOINTMENT, "starts_at", "2030-05-01T09:30:00"),
    ("date-as-timestamp", AppointmentIn, APPOINTMENT, "starts_at", "2030-05-01"),
    ("timestamp-year-1800", AppointmentIn, APPOINTMENT, "starts_at", "1800-01-01T00:00:00Z"),
    ("date-year-9999", PetIn, PET, "date_of_birth", "9999-01-01"),
    ("born-in-2200", PetIn, PET, "date_of_birth", "2200-01-01"),
    ("visited-in-2200", RecordIn, RECORD, "visited_at", "2200-01-01T00:00:00Z"),
    ("weight-under-a-gram", RecordIn, RECORD, "weight_kg", 0.0004),
    ("unknown-field", PetIn, PET, "owner", "someone"),
    ("unknown-field-2", SignupIn, SIGNUP, "role", "owner"),
    ("blank-name", CustomerIn, CUSTOMER, "last_name", "   "),
    ("phone-no-plus", CustomerIn, CUSTOMER, "phone", "351912345678"),
    ("phone-leading-zero", CustomerIn, CUSTOMER, "phone", "+0351912345"),
    ("phone-spaces", CustomerIn, CUSTOMER, "phone", "+351 912 345 678"),
    ("phone-16-digits", CustomerIn, CUSTOMER, "phone", "+1234567890123456"),
    ("phone-number", CustomerIn, CUSTOMER, "phone", 351912345678),
    ("email-no-at", CustomerIn, CUSTOMER, "email", "ana.example.com"),
    ("email-no-domain", SignupIn, SIGNUP, "email", "ana@"),
    ("password-short", SignupIn, SIGNUP, "password", "short"),
    ("tz-unknown", SignupIn, SIGNUP, "timezone", "Mars/Olympus_Mons"),
    ("tz-path", SignupIn, SIGNUP, "timezone", "../../etc/passwd"),
    ("tz-empty", SignupIn, SIGNUP, "timezone", ""),
    ("tz-offset", SignupIn, SIGNUP, "timezone", "+01:00"),
    ("language", CustomerIn, CUSTOMER, "preferred_language", "english"),
    ("microchip", PetIn, PET, "microchip", "12345"),
    ("list-for-string", PetIn, PET, "name", ["Rex"]),
    ("null-required", PetIn, PET, "name", None),
    ("due-before-given", VaccinationIn, VACCINATION, "next_due", "2023-12-31"),
    ("due-in-eleven-years", VaccinationIn, VACCINATION, "next_due", "2035-01-02"),
    ("expired-eleven-years-before", VaccinationIn, VACCINATION, "expiry_date", "2012-12-31"),
]


@pytest.mark.parametrize(
    ("model", "base", "field", "value"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_rejected(model: type[BaseModel], base: dict[str, Any], field: str, value: Any) -> None:
    assert (field,) in _error_locs(model, {**base, field: value})


ENUM_FIELDS = [
    (PetIn, PET, "species", Species),
    (PetIn, PET, "sex", Sex),
    (StatusIn, {}, "status", Status),
    (StaffPatch, {}, "role", Role),
    (InvitationIn, {"email": "a@example.com"}, "role", Role),
]


@pytest.mark.parametrize(
    ("model", "base", "field", "value"),
    [(m, b, f, v) for m, b, f, e in ENUM_FIELDS for v in e],
    ids=_id,
)
def test_enum_accepts_its_values(
    model: type[BaseModel], base: dict[str, Any], field: str, value: StrEnum
) -> None:
    validated = model.model_validate({**base, field: value.value})
    assert getattr(validated, field) is value


@pytest.mark.parametrize("bad", ["dragon", "DOG", "", 0, True, None])
@pytest.mark.parametrize(("model", "base", "field"), [e[:3] for e in ENUM_FIELDS], ids=_id)
def test_enum_rejects_others(
    model: type[BaseModel], base: dict[str, Any], field: str, bad: Any
) -> None:
    assert (field,) in _error_locs(model, {**base, field: bad})


LIMITED = [
    (CustomerIn, CUSTOMER, "first_name", 200),
    (PetIn, PET, "name", 100),
    (AppointmentIn, APPOINTMENT, "reason", 500),
    (RecordIn, RECORD, "subjective", 20_000),
    (SignupIn, SIGNUP, "password", 128),
]


@pytest.mark.parametrize(("model", "base", "field", "limit"), LIMITED, ids=_id)
@given(data=st.data())
def test_any_string_over_the_limit_is_rejected(
    model: type[BaseModel], base: dict[str, Any], field: str, limit: int, data: st.DataObject
) -> None:
    length = data.draw(st.integers(limit + 1, limit + 50), label="length")
    head = data.draw(st.text(max_size=50), label="head")
    value = head + "x" * (length - len(head))
    assume(len(value.strip()) > limit)
    assert (field,) in _error_locs(model, {**base, field: value})


@pytest.mark.parametrize(("model", "base", "field", "limit"), LIMITED, ids=_id)
def test_string_at_the_limit_is_accepted(
    model: type[BaseModel], base: dict[str, Any], field: str, limit: int
) -> None:
    model.model_validate({**base, field: "x" * limit})


BOUNDED_FORMATS = {"uuid", "date", "date-time"}


def _unbounded_strings(node: Any, defs: dict[str, Any], path: str, seen: set[str]) -> list[str]:
    if isinstance(node, list):
        return [p for item in node for p in _unbounded_strings(item, defs, path, seen)]
    if not isinstance(node, dict):
        return []
    found: list[str] = []
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            found += _unbounded_strings(defs[name], defs, path, seen | {name})
    kinds = node.get("type")
    is_string = kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    exempt = "enum" in node or "const" in node or node.get("format") in BOUNDED_FORMATS
    if is_string and not exempt and "maxLength" not in node:
        found.append(path)
    for name, sub in node.get("properties", {}).items():
        found += _unbounded_strings(sub, defs, f"{path}.{name}", seen)
    for key in ("items", "anyOf", "allOf", "oneOf", "additionalProperties", "prefixItems"):
        if key in node:
            found += _unbounded_strings(
                node[key], defs, f"{path}[]" if key == "items" else path, seen
            )
    return found


def test_inputs_were_found() -> None:
    names = {m.__name__ for m in INPUTS}
    assert {
        "PetIn",
        "CustomerIn",
        "CustomerPatch",
        "AppointmentIn",
        "RecordIn",
        "SignupIn",
    } <= names


@pytest.mark.parametrize("model", INPUTS, ids=_id)
def test_every_string_has_a_max_length(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    unbounded = _unbounded_strings(schema, schema.get("$defs", {}), model.__name__, set())
    assert not unbounded, f"strings without maxLength: {unbounded}"


def test_walker_notices_an_unbounded_string() -> None:
    class Loose(BaseModel):
        free: str = "x"
        nested: list[str | None] = []

    schema = Loose.model_json_schema()
    assert _unbounded_strings(schema, {}, "Loose", set()) == ["Loose.free", "Loose.nested[]"]


def _accepts_none(annotation: Any) -> bool:
    return annotation is None or type(None) in get_args(annotation)


PATCH_MODELS = [m for m in INPUTS if m.__name__.endswith("Patch")] + [ConsentsIn]
OMITTABLE = [
    (model, name)
    for model in PATCH_MODELS
    for name, field in model.model_fields.items()
    if not field.is_required() and field.default is None and not _accepts_none(field.annotation)
]


def test_omittable_fields_were_found() -> None:
    found = {(m.__name__, f) for m, f in OMITTABLE}
    assert {("CustomerPatch", "first_name"), ("CustomerPatch", "consents")} <= found
    assert {("PetPatch", "name"), ("AppointmentPatch", "starts_at"), ("ConsentsIn", "sms")} <= found


@pytest.mark.parametrize(("model", "field"), OMITTABLE, ids=_id)
def test_omittable_field_rejects_explicit_null(model: type[BaseModel], field: str) -> None:
    assert (field,) in _error_locs(model, {field: None})


@pytest.mark.parametrize("model", PATCH_MODELS, ids=_id)
def test_empty_patch_sets_nothing(model: type[BaseModel]) -> None:
    assert model.model_validate({}).model_dump(exclude_unset=True) == {}


def test_patch_keeps_only_what_was_sent() -> None:
    patch = CustomerPatch.model_validate({"first_name": " Ana ", "email": None})
    assert patch.model_dump(exclude_unset=True) == {"first_name": "Ana", "email": None}


@given(st.text(max_size=80))
def test_timezone_fails_only_with_validation_errors(zone: str) -> None:
    try:
        validated = SignupIn.model_validate({**SIGNUP, "timezone": zone})
    except ValidationError:
        return
    assert validated.timezone == zone


def test_a_refused_dose_time_is_reported_once_not_again_by_the_dates_checked_against_it() -> None:
    future = {**VACCINATION, "given_at": "2999-01-01T00:00:00Z"}
    dates = {"next_due": "1990-01-01", "expiry_date": "1990-01-01"}
    assert _error_locs(VaccinationIn, {**future, **dates}) == [("given_at",)]
