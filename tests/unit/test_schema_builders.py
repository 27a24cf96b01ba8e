"""The schema builders app/kit runs while the modules load (the time zones, the e-mail schema's
case-blind names, the PATCH fields that may be left out, the second factor's field, a streamed
form's request body), built afresh here and read back: made at import, before any test, they
are otherwise held by nothing a test can see change (ADR 0017, import-time code)."""

from __future__ import annotations

from importlib import resources

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError

from app.kit import openapi
from app.kit.openapi import multipart_body, problem_aware_openapi
from app.kit.types import (
    NO_NUL,
    Input,
    Name,
    TimeZoneName,
    _any_case,
    _zones,
    omittable,
    second_factor,
)


def test_every_iana_zone_of_tzdata_is_a_time_zone_name_in_order() -> None:
    listed = resources.files("tzdata").joinpath("zones").read_text().split()
    zones = _zones()
    assert zones == [(name, name) for name in sorted(listed)]
    assert ("Europe/Lisbon", "Europe/Lisbon") in zones
    assert [(zone.name, zone.value) for zone in TimeZoneName] == zones


def test_a_name_in_any_case_matches_each_letter_either_way() -> None:
    assert _any_case("Test") == "[tT][eE][sS][tT]"
    assert _any_case("") == ""


def test_an_omittable_field_may_be_left_out_but_not_set_to_null() -> None:
    class Patch(BaseModel):
        weight: int = omittable("In grams")
        colour: str = omittable()

    assert Patch().weight is None
    assert Patch(weight=3).weight == 3
    with pytest.raises(ValidationError):
        Patch(weight=None)  # type: ignore[arg-type]
    schema = Patch.model_json_schema()
    assert schema["properties"]["weight"] == {
        "default": None,
        "description": "In grams",
        "title": "Weight",
        "type": "integer",
    }
    assert "description" not in schema["properties"]["colour"]
    assert "required" not in schema


def test_the_second_factor_is_optional_and_says_what_to_send() -> None:
    class Login(BaseModel):
        totp_code: str | None = second_factor()

    assert Login().totp_code is None
    assert Login.model_json_schema()["properties"]["totp_code"]["description"] == (
        "When your account uses multi-factor authentication: the six-digit code from your"
        " authenticator app, or one of your recovery codes"
    )


def test_a_streamed_form_is_the_documented_body_and_a_component() -> None:
    class AttachmentForm(BaseModel):
        file: bytes

    app = FastAPI()

    @app.post("/files", openapi_extra=multipart_body(AttachmentForm))
    async def upload(request: Request) -> None:
        return None

    try:
        document = problem_aware_openapi(app)
    finally:
        openapi._FORMS.pop("AttachmentForm")
    assert document["paths"]["/files"]["post"]["requestBody"] == {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"$ref": "#/components/schemas/AttachmentForm"}}
        },
    }
    component = document["components"]["schemas"]["AttachmentForm"]
    assert component["properties"]["file"]["type"] == "string"
    assert component["required"] == ["file"]


def test_every_free_string_of_an_input_says_it_holds_no_nul_in_lists_and_options_too() -> None:
    class Visit(Input):
        notes: str
        tags: list[str]
        aliases: list[str] | None = None
        title: Name
        count: int

    properties = Visit.model_json_schema()["properties"]
    assert properties["notes"]["pattern"] == NO_NUL
    assert properties["tags"]["items"]["pattern"] == NO_NUL
    assert "pattern" not in properties["tags"]
    assert properties["aliases"]["anyOf"][0]["items"]["pattern"] == NO_NUL
    assert properties["title"]["pattern"] != NO_NUL  # its own pattern excludes NUL already
    assert "pattern" not in properties["count"]
