"""The web app's pages, read from the app's route table, as the attack suites send them.

A page is a route of ``app/web``: a GET that shows HTML, or a form's POST. The suites reach
every one; one they cannot attack fails them, named (``test_pages.py``):

* a page declares its action (``requires(Action.x)``), unless it is public (``PUBLIC_PAGES``);
* each path parameter names a resource kind the estate makes (``ID_KINDS``);
* each form has a valid example (``FORMS``), as a person would fill it in.
"""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts

from app.auth.deps import required_action
from app.auth.permissions import Action
from fixtures.factories import DEFAULT_PASSWORD
from tests.contract.snapshot import offline_app
from tests.security.catalogue import ID_KINDS, is_page
from tests.security.estate import MAKERS, Estate, next_slot

PUBLIC_PAGES: dict[tuple[str, str], str] = {
    ("GET", "/login"): "the log-in form",
    ("POST", "/login"): "logging in: the password is its proof; login CSRF is refused by Origin"
    " (test_csrf.py)",
    ("GET", "/signup"): "the sign-up form",
    ("POST", "/signup"): "opening a clinic: as the API's sign-up, an existing account's password"
    " is its proof; another site's page is refused by Origin",
}
"""Pages anyone may open, with why."""

Form = Callable[[Estate], dict[str, str]]


def _slot(estate: Estate) -> dict[str, str]:
    """A free slot with the estate's vet, as the clinic's clock writes it (a new one each time)."""
    local = next_slot().astimezone(zoneinfo.ZoneInfo(estate.clinic.setup.clinic.timezone))
    return {
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M"),
        "vet_id": str(estate["vet"]),
    }


FORMS: dict[tuple[str, str], Form] = {
    ("POST", "/login"): lambda e: {
        "email": e.clinic.owner.user.email,
        "password": DEFAULT_PASSWORD,
    },
    ("POST", "/logout"): lambda e: {},
    ("POST", "/signup"): lambda e: {
        "clinic_name": "Harbour Vets",
        "timezone": "Europe/Lisbon",
        "owner_name": "Nova Owner",
        "email": f"owner.{uuid.uuid4().hex[:10]}@example.org",
        "password": DEFAULT_PASSWORD,
    },
    ("POST", "/clients/new"): lambda e: {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"ada.{uuid.uuid4().hex[:10]}@example.org",
        "consents_email": "true",
    },
    ("POST", "/clients/{customer_id}/pets/new"): lambda e: {"name": "Rex", "species": "dog"},
    ("POST", "/pets/{pet_id}/book"): lambda e: {**_slot(e), "reason": "Vaccination"},
    ("POST", "/appointments/{appointment_id}/edit"): _slot,
    ("POST", "/appointments/{appointment_id}/status"): lambda e: {"status": "confirmed"},
}
"""A valid form for each page's POST, in the estate's clinic (the CSRF token is added)."""


@dataclass(frozen=True)
class Page:
    method: str
    path: str
    action: Action | None

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def public(self) -> bool:
        return self.key in PUBLIC_PAGES

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def url(self, ids: Mapping[str, uuid.UUID]) -> str:
        url = self.path
        for name in self.path_params:
            url = url.replace("{" + name + "}", str(ids[ID_KINDS[name]]))
        return url

    def form(self, estate: Estate) -> dict[str, str] | None:
        return FORMS[self.key](estate) if self.method == "POST" else None

    def problems(self) -> list[str]:
        found = []
        if self.action is None and not self.public:
            found.append("declares no action (Depends(requires(Action.x))) and is not public")
        for name in self.path_params:
            if ID_KINDS.get(name) not in MAKERS:
                found.append(f"has path parameter '{name}', and no factory makes its resource")
        if self.method == "POST" and self.key not in FORMS:
            found.append("has no example form in tests/security/pages.FORMS")
        return [f"{self.label} {problem}" for problem in found]


def pages() -> list[Page]:
    found = []
    for context in iter_route_contexts(offline_app().routes):
        if not is_page(context):
            continue
        dependant = getattr(context, "dependant", None)
        action = required_action(dependant) if dependant is not None else None
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", context.path or "")
        found.extend(Page(method, path, action) for method in sorted(context.methods or ()))
    return found


PAGES = pages()
GUARDED = [page for page in PAGES if not page.public]
