"""The repository's pure helpers: a PATCH copies only what the client sent and what the route
lets it change, and a broken constraint is named whichever way the driver reports it."""

from __future__ import annotations

from types import SimpleNamespace

from asyncpg.exceptions import PostgresError
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from app.db.repository import apply, constraint_of


class Changes(BaseModel):
    name: str | None = None
    notes: str | None = None
    consents: list[str] | None = None


def test_a_patch_copies_the_fields_sent_but_not_those_the_route_keeps() -> None:
    item = SimpleNamespace(name="Rex", notes="kept", consents=["sms"])
    apply(item, Changes(name="Max", consents=[]), exclude={"consents"})
    assert vars(item) == {"name": "Max", "notes": "kept", "consents": ["sms"]}


def _unique_violation(constraint: str) -> PostgresError:
    return PostgresError.new({"C": "23505", "M": "duplicate key", "n": constraint})


def test_the_broken_constraint_is_named_from_the_driver_error_or_what_it_caused() -> None:
    # SQLAlchemy's asyncpg dialect hands on its own error caused by asyncpg's; a driver's
    # error may also arrive unwrapped.
    translated = RuntimeError("IntegrityError")
    translated.__cause__ = _unique_violation("uq_pets_tenant_id_microchip")
    assert (
        constraint_of(IntegrityError("INSERT", None, translated)) == "uq_pets_tenant_id_microchip"
    )
    unwrapped = _unique_violation("uq_users_email")
    assert constraint_of(IntegrityError("INSERT", None, unwrapped)) == "uq_users_email"
    assert constraint_of(IntegrityError("INSERT", None, RuntimeError("no constraint"))) is None
