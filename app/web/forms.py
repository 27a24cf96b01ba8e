"""A page's form, validated by the same pydantic model as the API's body.

Fields arrive as strings (an empty one is a field left blank), a ticked box as true, lines as a
list; the model reads them as the JSON body the API would be sent, so a form and the API are
held to the same rules and answered with the same messages, per field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from app.kit.problems import InvalidInput, error_message

M = TypeVar("M", bound=BaseModel)
Errors = dict[str, str]
"""A message per field (the form field's name), in the order of the form."""


def fields(form: FormData, names: Iterable[str]) -> dict[str, str]:
    """The named fields that were filled in, stripped (a blank one is left out)."""
    found = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, str) and value.strip():
            found[name] = value.strip()
    return found


def checked(form: FormData, name: str) -> bool:
    """A checkbox: sent when ticked, absent when not."""
    return form.get(name) is not None


def validate(model: type[M], data: Mapping[str, Any]) -> M | Errors:
    try:
        return model.model_validate_json(json.dumps(dict(data)))
    except ValidationError as exc:
        errors: Errors = {}
        for err in exc.errors():
            # A list's item is its list's field (``alerts``, not ``alerts_2``).
            name = "_".join(part for part in err["loc"] if isinstance(part, str)) or "form"
            errors.setdefault(name, error_message(err))
        return errors


@asynccontextmanager
async def undone_if_refused(session: AsyncSession) -> AsyncIterator[None]:
    """Run a service's change in a savepoint: refused (a problem raised, a constraint hit), it
    is undone entirely, and the request's transaction stays usable for the page saying why."""
    async with session.begin_nested():
        yield


def errors_of(problem: InvalidInput, fields: Mapping[str, str] | None = None) -> Errors:
    """A service's refusal of named fields (``body.vet_id``), on the form's fields: by the same
    name, or as ``fields`` maps them (``starts_at`` shown on ``date``); the rest on the form."""
    errors: Errors = {}
    for error in problem.errors:
        name = "_".join(str(part) for part in error.loc if part != "body")
        errors.setdefault((fields or {}).get(name, name) or "form", error.msg)
    return errors or {"form": problem.detail or problem.title}
