"""The route table the attack suites are generated from, read from the app itself.

Every route the app serves is listed (its route table, including routes hidden from the OpenAPI
document) and joined with its operation in the document. A route the suites cannot attack fails
them, named, instead of being skipped quietly:

* each path parameter, body id and query filter id must name a resource kind the estate can
  make (``ID_KINDS`` here, :data:`tests.security.estate.MAKERS` there);
* each request body must have a valid example (``BODIES``) that sets every id field it has;
* each route under /api must declare its action (``requires(Action.x)``) unless it is public.

``EXEMPT`` and :data:`tests.security.surface.PUBLIC` are the reviewed exceptions, each with its
reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pyotp
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from app.auth.deps import required_action
from app.auth.models import TokenPurpose
from app.auth.permissions import Action
from fixtures import files
from fixtures.factories import DEFAULT_PASSWORD
from tests.contract.snapshot import offline_app
from tests.harness import browser
from tests.harness.api import PROBLEM_JSON
from tests.harness.world import Actor, World
from tests.security.estate import MAKERS, Estate, next_slot
from tests.security.surface import PUBLIC, resolve, types

API = "/api/"
HOW_TO_FIX = (
    "teach tests/security (catalogue.ID_KINDS/BODIES, estate.MAKERS) about it, or exempt the"
    " route in catalogue.EXEMPT with the reason"
)

EXEMPT: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): "the published API description: the same for everyone",
    ("GET", "/docs"): "the Swagger UI page: static HTML",
    ("*", "/docs/static"): "Swagger UI's scripts and styles: static files",
    ("GET", "/health/live"): "liveness probe: answers from the process alone",
    ("GET", "/health/ready"): "readiness probe: database and Redis state, no clinic data",
    ("GET", "/health/dependencies"): "operators' dependency report: no clinic data; the"
    " operator token is checked by tests/integration/test_dependencies.py",
    ("*", "/static"): "the web pages' scripts and styles: static files",
}
"""Routes outside the API that hold no clinic data, with why they are not attacked."""

SINGLE_USE: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/client-exports/{export_id}/content"): "a client's export is downloaded once",
    ("GET", "/api/v1/clinic-exports/{clinic_export_id}/content"): "as a client's export",
}
"""Reads whose success uses their resource up, with why: the suites that send one several
times make a new resource for each request."""

SESSION_ONLY: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/switch"): "switching clinic replaces a login session; an API token"
    " is bound to the clinic it was created in",
    ("POST", "/api/v1/auth/logout-everywhere"): "a person ends their logins, not a script",
    ("POST", "/api/v1/auth/mfa/totp"): "a person enrols their authenticator from a login",
    ("POST", "/api/v1/auth/mfa/totp/confirm"): "as enrolling",
    ("POST", "/api/v1/auth/mfa/totp/disable"): "as enrolling",
    ("POST", "/api/v1/auth/mfa/recovery-codes"): "as enrolling",
    ("POST", "/api/v1/auth/password"): "a person changes their password from a login; it renews"
    " the session",
}
"""Routes that act on a login session, so the suites call them with a session cookie."""

STEP_UP: dict[tuple[str, str], tuple[str, ...]] = {
    ("PATCH", "/api/v1/clinics/current"): ("require_mfa", "client retention", "record retention"),
    ("PATCH", "/api/v1/staff/{user_id}"): ("administrators",),
    ("DELETE", "/api/v1/staff/{user_id}"): ("administrators",),
    ("POST", "/api/v1/staff/invitations"): ("invited administrators",),
    ("DELETE", "/api/v1/staff/invitations/{invitation_id}"): ("invited administrators",),
    ("POST", "/api/v1/staff/{user_id}/unlock"): ("locked accounts",),
}
"""Routes some of whose requests change a security setting, and which settings (as
tests/security/test_step_up.py reads them, which proves this list): the suites call them with a
session logged in just now with a second factor, which such a change needs (ADR 0014)."""

STEERING_HEADERS = ("X-Tenant-ID", "X-Clinic-ID")
"""Headers a client might hope picks the clinic; the credential alone does."""

ID_KINDS: dict[str, str] = {
    "clinic_id": "clinic",
    "location_id": "location",
    "room_id": "room",
    "type_id": "appointment_type",
    "appointment_type_id": "appointment_type",
    "appointment_id": "appointment",
    "customer_id": "customer",
    "pet_id": "pet",
    "record_id": "medical_record",
    "attachment_id": "attachment",
    "export_id": "client_export",
    "clinic_export_id": "clinic_export",
    "user_id": "member",
    "vet_id": "vet",
    "invitation_id": "invitation",
    "token_id": "token",
    # An audit event's object (app/audit) is a row of any table; the suites name a customer.
    "object_id": "customer",
}
"""An id's name (path parameter, body field, query filter) -> the kind of resource it names."""


# pragma: allowlist nextline secret - a made-up passphrase the suites set by reset links
NEW_PASSWORD = "amber lanterns over quiet harbours"


def _unique(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:10]}@example.org"


def _ids(estate: Estate, **fields: str) -> dict[str, str]:
    return {field: str(estate[kind]) for field, kind in fields.items()}


Body = Callable[[Estate], dict[str, Any]]
BODIES: dict[str, Body] = {
    "SignupIn": lambda e: {
        "clinic_name": "Harbour Vets",
        "owner_name": "Nova Owner",
        "email": _unique("owner"),
        "password": DEFAULT_PASSWORD,
    },
    "LoginIn": lambda e: {
        "email": e.clinic.owner.user.email,
        "password": DEFAULT_PASSWORD,
        **_ids(e, clinic_id="clinic"),
    },
    "AcceptInvitationIn": lambda e: {
        "token": e.invitation_token,
        "name": "New Member",
        "password": DEFAULT_PASSWORD,
    },
    "SwitchClinicIn": lambda e: _ids(e, clinic_id="clinic"),
    "TokenIn": lambda e: {"name": "deploy bot", "expires_in_days": 30},
    "ClinicPatch": lambda e: {"name": "Renamed Clinic"},
    "LocationIn": lambda e: {"name": "Annex", "city": "Porto"},
    "LocationPatch": lambda e: {"name": "Renamed"},
    "RoomIn": lambda e: {"name": "Surgery 2", **_ids(e, location_id="location")},
    "RoomPatch": lambda e: {"name": "Renamed"},
    "AppointmentTypeIn": lambda e: {"name": "Check-up", "default_duration_minutes": 30},
    "AppointmentTypePatch": lambda e: {"default_duration_minutes": 25},
    "CustomerIn": lambda e: {"first_name": "Ada", "last_name": "Lovelace", "email": _unique("ada")},
    "CustomerPatch": lambda e: {"city": "Braga"},
    "LegalHoldIn": lambda e: {"reason": "Claim 2026/113"},
    "PetIn": lambda e: {"name": "Rex", "species": "dog", **_ids(e, customer_id="customer")},
    "PetPatch": lambda e: {"name": "Rexie", **_ids(e, customer_id="customer")},
    "WeightIn": lambda e: {"weight_kg": 12.5},
    "AppointmentIn": lambda e: {
        "starts_at": next_slot().isoformat(),
        "reason": "Vaccination",
        **_ids(
            e,
            pet_id="pet",
            vet_id="vet",
            room_id="room",
            appointment_type_id="appointment_type",
        ),
    },
    "AppointmentPatch": lambda e: {
        "notes": "Bring the vaccination card",
        **_ids(e, vet_id="vet", room_id="room"),
    },
    "StatusIn": lambda e: {"status": "confirmed"},
    "RecordIn": lambda e: {
        "subjective": "Limping on the left hind leg",
        **_ids(e, pet_id="pet", appointment_id="appointment"),
    },
    "RecordPatch": lambda e: {"plan": "Rest for a week"},
    "AddendumIn": lambda e: {"text": "Owner called: improving"},
    # multipart/form-data: bytes are sent as a file part, anything else as a plain field.
    "AttachmentUpload": lambda e: {"file": files.PNG},
    "InvitationIn": lambda e: {"email": _unique("invitee"), "role": "technician"},
    "StaffPatch": lambda e: {"role": "receptionist"},
    "CheckoutIn": lambda e: {"plan": "starter"},
    # Valid in shape; a code that works depends on the caller (PREPARED).
    "TotpCodeIn": lambda e: {"code": "000000"},
    "SecondFactorIn": lambda e: {"code": "000000"},
    # Mailed links, each spent once: the estate holds a live one (bodies.ready makes the next).
    "VerifyEmailIn": lambda e: {"token": e.verification_token},
    "PasswordResetIn": lambda e: {"email": e.clinic.owner.user.email},
    "PasswordResetCompleteIn": lambda e: {"token": e.reset_token, "password": NEW_PASSWORD},
    "PasswordChangeIn": lambda e: {
        "current_password": DEFAULT_PASSWORD,
        "new_password": DEFAULT_PASSWORD,
    },
}
"""Request schema -> a valid body in the estate's clinic, setting every id field it has."""


async def _pending_mfa(world: World, actor: Actor) -> dict[str, Any]:
    return {"code": pyotp.TOTP(await world.enrol_mfa(actor.user, confirmed=False)).now()}


async def _enabled_mfa(world: World, actor: Actor) -> dict[str, Any]:
    return {"code": pyotp.TOTP(await world.enrol_mfa(actor.user)).now()}


async def _verification_link(world: World, actor: Actor) -> dict[str, Any]:
    return {"token": await world.account_link(actor.user, TokenPurpose.verify_email)}


async def _unverified(world: World, actor: Actor) -> dict[str, Any]:
    await world.unverify(actor.user)
    return {}


PREPARED: dict[tuple[str, str], Callable[[World, Actor], Awaitable[dict[str, Any]]]] = {
    ("POST", "/api/v1/auth/mfa/totp/confirm"): _pending_mfa,
    ("POST", "/api/v1/auth/mfa/totp/disable"): _enabled_mfa,
    ("POST", "/api/v1/auth/mfa/recovery-codes"): _enabled_mfa,
    ("POST", "/api/v1/auth/verify-email"): _verification_link,
    ("POST", "/api/v1/auth/verify-email/resend"): _unverified,
}
"""Routes whose valid body depends on the caller's own state: the caller is put in that state
(a pending or active authenticator) and the body made for them."""


async def body_for(
    world: World, actor: Actor | None, route: Route, estate: Estate
) -> dict[str, Any] | None:
    """A valid body for ``actor`` calling ``route`` (see ``PREPARED``)."""
    prepare = PREPARED.get(route.key)
    if prepare is not None and actor is not None:
        return await prepare(world, actor)
    return route.body(estate)


def _is_id(schema: dict[str, Any]) -> bool:
    schema = resolve(schema)
    if schema.get("format") == "uuid":
        return True
    return any(_is_id(part) for key in ("anyOf", "oneOf") for part in schema.get(key, []))


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    action: Action | None
    spec: dict[str, Any] | None

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def body_schema(self) -> str | None:
        body = (self.spec or {}).get("requestBody")
        if body is None:
            return None
        [content] = body["content"].values()
        ref: str = content["schema"]["$ref"]
        return ref.removeprefix("#/components/schemas/")

    @property
    def single_use(self) -> bool:
        """Its success uses its resource up (:data:`SINGLE_USE`): each request needs a new one."""
        return self.key in SINGLE_USE

    @property
    def multipart(self) -> bool:
        body = (self.spec or {}).get("requestBody") or {}
        return "multipart/form-data" in body.get("content", {})

    @property
    def body_ids(self) -> list[str]:
        """Body fields that name another resource (uuid-typed)."""
        if self.body_schema is None:
            return []
        properties = resolve({"$ref": f"#/components/schemas/{self.body_schema}"}).get(
            "properties", {}
        )
        return sorted(name for name, schema in properties.items() if _is_id(schema))

    @property
    def query_ids(self) -> list[str]:
        """Query parameters that filter by another resource (uuid-typed)."""
        return [
            parameter["name"]
            for parameter in (self.spec or {}).get("parameters", [])
            if parameter["in"] == "query" and _is_id(parameter.get("schema", {}))
        ]

    @property
    def query_strings(self) -> list[str]:
        return [
            parameter["name"]
            for parameter in (self.spec or {}).get("parameters", [])
            if parameter["in"] == "query" and "string" in types(parameter.get("schema", {}))
        ]

    @property
    def public(self) -> bool:
        return (self.method.lower(), self.path) in PUBLIC

    @property
    def session_only(self) -> bool:
        return self.key in SESSION_ONLY

    @property
    def steps_up(self) -> bool:
        return self.key in STEP_UP

    def url(self, ids: Mapping[str, uuid.UUID]) -> str:
        """The path with each parameter the id of its kind from ``ids``."""
        url = self.path
        for name in self.path_params:
            url = url.replace("{" + name + "}", str(ids[ID_KINDS[name]]))
        return url

    def body(self, estate: Estate) -> dict[str, Any] | None:
        return None if self.body_schema is None else BODIES[self.body_schema](estate)

    def problems(self) -> list[str]:
        """Why the suites could not attack this route; empty when they can."""
        if self.key in EXEMPT:
            return []
        found = []
        if not self.path.startswith(API):
            found.append("is outside /api and not exempt")
        if self.spec is None:
            found.append("is hidden from the OpenAPI document")
        if self.action is None and not self.public:
            found.append("declares no action (Depends(requires(Action.x))) and is not public")
        for name in self.path_params:
            if ID_KINDS.get(name) not in MAKERS:
                found.append(f"has path parameter '{name}', and no factory makes its resource")
        for name in [*self.body_ids, *self.query_ids]:
            if ID_KINDS.get(name) not in MAKERS:
                found.append(f"takes the id '{name}', and no factory makes what it names")
        if self.body_schema is not None and self.body_schema not in BODIES:
            found.append(f"has no example body for {self.body_schema}")
        return [f"{self.label} {problem}; {HOW_TO_FIX}" for problem in found]


def is_page(context: Any) -> bool:
    """A route of the web app (``app/web``): attacked as a page (tests/security/pages.py)."""
    return str(getattr(getattr(context, "endpoint", None), "__module__", "")).startswith("app.web.")


def routes(app: FastAPI | None = None) -> list[Route]:
    """Every route of ``app`` (by default the app as configured for tests), in table order."""
    app = app or offline_app()
    document = app.openapi()
    found = []
    for context in iter_route_contexts(app.routes):
        if is_page(context):
            continue  # tests/security/pages.py
        methods = set(context.methods or {"*"})
        if "GET" in methods:
            methods.discard("HEAD")
        dependant = getattr(context, "dependant", None)
        action = required_action(dependant) if dependant is not None else None
        for method in sorted(methods):
            # As the document writes it: ``{user_id}``, not the route's ``{user_id:uuid}``.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", context.path or "")
            spec = document["paths"].get(path, {}).get(method.lower())
            found.append(Route(method, path, action, spec))
    return found


ROUTES = routes()
ATTACKED = [route for route in ROUTES if route.key not in EXEMPT]


@dataclass(frozen=True)
class Credentials:
    headers: dict[str, str]
    cookies: dict[str, str]


ANONYMOUS = Credentials({}, {})


async def credentials(world: World, actor: Actor | None, route: Route) -> Credentials:
    """How ``actor`` (none: anonymous) calls ``route``: a login session (one that just passed a
    second factor where the route may change a security setting) or their API token."""
    if actor is None:
        return ANONYMOUS
    if route.steps_up:
        return Credentials({}, browser.cookies(await world.step_up(actor)))
    if route.session_only:
        return Credentials({}, browser.cookies(await world.login(actor)))
    return Credentials(actor.headers, {})


async def send(
    client: httpx.AsyncClient,
    caller: Credentials,
    route: Route,
    url: str,
    body: dict[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    client.cookies.clear()
    client.cookies.update(caller.cookies)
    headers = {**caller.headers, **(headers or {})}
    if route.multipart and body is not None:
        parts = {
            name: ("upload.png", value) if isinstance(value, bytes) else (None, str(value))
            for name, value in body.items()
        }
        return await client.request(route.method, url, files=parts, headers=headers, params=params)
    return await client.request(route.method, url, json=body, headers=headers, params=params)


def problem(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body (empty if the response is not one)."""
    if response.headers.get("content-type") != PROBLEM_JSON:
        return {}
    body: dict[str, Any] = response.json()
    return body


def explain(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:300]}"
