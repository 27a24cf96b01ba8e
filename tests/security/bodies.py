"""The fields of every request body, read from the OpenAPI document, and valid bodies to put an
attack into one field at a time.

A field is addressed by its path in the body (``("vaccinations", 0, "vaccine")``); nested
objects and arrays of objects are filled with the valid example in ``ITEMS``, so that the
attack is the only thing wrong with the request. A nested schema without an example fails
``test_every_nested_schema_has_an_example`` instead of being skipped.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from app.auth.service import INVITATION_PREFIX
from app.kit import crypto
from app.kit.clock import utcnow
from app.kit.types import NO_NUL, NON_BLANK
from fixtures.factories import DEFAULT_PASSWORD_HASH, InvitationFactory
from tests.harness.api import PROBLEM_JSON
from tests.harness.world import World
from tests.security.catalogue import ATTACKED, PREPARED, Route, problem
from tests.security.estate import Estate, renew_links
from tests.security.surface import resolve, types

Path = tuple[str | int, ...]

ITEMS: dict[str, Callable[[], dict[str, Any]]] = {
    "VaccinationIn": lambda: {
        "vaccine": "Rabies",
        "given_at": (utcnow() - dt.timedelta(days=30)).isoformat(),
    },
    "PrescriptionIn": lambda: {"drug": "Meloxicam", "dose": "1 ml", "frequency": "daily"},
    "ConsentsIn": lambda: {"email": True},
}
"""Nested request schema -> a valid example of it."""

NOT_STORED: dict[tuple[str, str], str] = {
    ("SignupIn", "password"): "kept only as an argon2 hash",
    ("LoginIn", "password"): "checked against the hash, never stored",
    ("AcceptInvitationIn", "password"): "kept only as an argon2 hash",
    ("AcceptInvitationIn", "token"): "the credential: looked up by its hash, never stored",
    ("VerifyEmailIn", "token"): "a mailed link's secret: looked up by its hash, never stored",
    ("PasswordResetCompleteIn", "token"): "a mailed link's secret: looked up by its hash",
    ("PasswordResetCompleteIn", "password"): "kept only as an argon2 hash",
    ("PasswordChangeIn", "current_password"): "checked against the hash, never stored",
    ("PasswordChangeIn", "new_password"): "kept only as an argon2 hash",
}
"""Free-text fields that are not kept as given, and why."""

FREE_TEXT_PATTERNS = {NO_NUL, NON_BLANK}
"""Patterns that only refuse NUL or a blank value: text under them is free."""


@dataclass(frozen=True)
class Field:
    schema: str
    """The (nested) schema that declares it."""
    name: str
    path: Path
    spec: dict[str, Any]
    """Its schema, resolved; for a nullable field, the non-null variant."""
    types: frozenset[str]
    containers: tuple[str | None, ...] = ()
    """For each step of ``path`` but the last: the nested schema to make there if it is
    missing, or None for an array."""

    @property
    def label(self) -> str:
        return ".".join(str(part) for part in self.path)

    @property
    def is_string(self) -> bool:
        return "string" in self.types

    @property
    def free_text(self) -> bool:
        """A string without enum, format, or a pattern beyond 'no NUL, not blank'."""
        spec = self.spec
        return (
            self.is_string
            and "enum" not in spec
            and "format" not in spec
            and spec.get("pattern", NO_NUL) in FREE_TEXT_PATTERNS
        )

    @property
    def stored(self) -> bool:
        return (self.schema, self.name) not in NOT_STORED

    @property
    def max_length(self) -> int | None:
        return self.spec.get("maxLength")

    def fits(self, value: str) -> bool:
        return len(value) <= (self.max_length or len(value)) and len(value) >= self.spec.get(
            "minLength", 0
        )


def schema_of(name: str) -> dict[str, Any]:
    return resolve({"$ref": f"#/components/schemas/{name}"})


def _ref_name(schema: dict[str, Any]) -> str | None:
    for variant in (schema, *schema.get("anyOf", ())):
        if "$ref" in variant and resolve(variant).get("type") == "object":
            return str(variant["$ref"]).removeprefix("#/components/schemas/")
    return None


def _concrete(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null variant of a nullable schema, resolved."""
    variants = [resolve(v) for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
    return variants[0] if len(variants) == 1 else resolve(schema)


def fields(
    schema_name: str, prefix: Path = (), containers: tuple[str | None, ...] = ()
) -> Iterator[Field]:
    """Every property of a request schema, nested ones included (one array element each)."""
    for name, raw in schema_of(schema_name).get("properties", {}).items():
        spec = _concrete(raw)
        path = (*prefix, name)
        yield Field(schema_name, name, path, spec, frozenset(types(raw)), containers)
        nested = _ref_name(raw)
        if nested is not None:
            yield from fields(nested, path, (*containers, nested))
        items = spec.get("items")
        if spec.get("type") == "array" and items is not None:
            item_ref = _ref_name(items)
            if item_ref is not None:
                yield from fields(item_ref, (*path, 0), (*containers, None, item_ref))
            else:
                yield Field(
                    schema_name,
                    name,
                    (*path, 0),
                    _concrete(items),
                    frozenset(types(items)),
                    (*containers, None),
                )


def nested_schemas(schema_name: str) -> set[str]:
    """The object schemas nested in a request schema."""
    return {name for field in fields(schema_name) for name in field.containers if name}


def with_value(body: dict[str, Any], field: Field, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at the field, nested containers made from ``ITEMS``."""
    result = copy.deepcopy(body)
    node: Any = result
    for part, container in zip(field.path[:-1], field.containers, strict=True):
        if isinstance(part, int):
            while len(node) <= part:
                node.append(ITEMS[str(container)]() if container else None)
            node = node[part]
            continue
        if node.get(part) is None:
            node[part] = [] if container is None else ITEMS[container]()
        node = node[part]
    last = field.path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return result


def nested_example(field: Field) -> Any:
    """A valid value for a nested field: its container's example's, or plain text."""
    container = field.containers[-1]
    example = ITEMS[container]() if container else {}
    return example.get(str(field.path[-1]), "Plain text")


ONE_TIME_CODES = {"TotpCodeIn", "SecondFactorIn"}
ELSEWHERE: dict[tuple[str, str], str] = {
    **{
        route.key: "its body is a one-time code for the caller's own authenticator (PREPARED),"
        " bound by a pattern; attacked in test_mfa.py"
        for route in ATTACKED
        if route.key in PREPARED and route.body_schema in ONE_TIME_CODES
    },
    **{
        route.key: "a multipart file upload, not JSON: attacked in test_uploads.py"
        for route in ATTACKED
        if route.multipart
    },
}
"""Routes with a body that the generated body suites leave to a suite of their own, and why."""
WITH_BODY: list[Route] = [
    route for route in ATTACKED if route.body_schema and route.key not in ELSEWHERE
]


def body_fields(route: Route) -> list[Field]:
    return list(fields(str(route.body_schema)))


def valid_body(route: Route, estate: Estate) -> dict[str, Any]:
    body = route.body(estate)
    assert body is not None
    return body


CONSUMED = {"AcceptInvitationIn", "VerifyEmailIn", "PasswordResetCompleteIn", "PasswordChangeIn"}
"""Bodies whose valid request uses up what it names (see :func:`ready`)."""


async def ready(world: World, estate: Estate, route: Route) -> None:
    """Make what one request consumes, so that the next valid body works too."""
    if route.body_schema in {"VerifyEmailIn", "PasswordResetCompleteIn"}:  # links work once
        await renew_links(world, estate)
    if route.body_schema == "PasswordChangeIn":  # the example's current password is the default
        await world.set_password_hash(estate.clinic.owner.user, DEFAULT_PASSWORD_HASH)
    if route.body_schema == "AcceptInvitationIn":  # an invitation is accepted once
        secret, secret_hash = crypto.new_credential(INVITATION_PREFIX, estate.clinic.id)
        await world.make(
            estate.clinic,
            InvitationFactory,
            invited_by=estate.clinic.owner.user.id,
            secret_hash=secret_hash,
        )
        estate.invitation_token = secret


def names(response: httpx.Response, path: Path) -> bool:
    """Whether the 422 problem names the field (its location after ``body``)."""
    for error in problem(response).get("errors", []):
        loc = list(error.get("loc", []))
        if loc[1 : 1 + len(path)] == list(path):
            return True
    return False


def is_json(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() in {
        "application/json",
        PROBLEM_JSON,
    }
