"""Tenancy carried by types: the lookup helpers refuse a session entered in another clinic, say
the clinic in their SQL, and every domain service that takes a session also takes the tenant."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import uuid
from typing import Any

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

import app
from app.auth.models import User
from app.clinics.models import Clinic
from app.db.repository import belongs_to, find, get_or_404, of_clinic, referenced
from app.db.tenancy import TENANT_KEY, InClinic, TenancyError, enter_tenant
from app.pets.models import Pet

HERE, ELSEWHERE = InClinic(uuid.uuid4()), InClinic(uuid.uuid4())
# Functions of a domain service that take a session but act on no tenant row themselves.
NO_TENANT = {
    "app.records.service.guarded_flush",
    # Make the clinic (and enter the session in it): there is no tenant before it.
    "app.clinics.service.open_clinic",
    "app.clinics.service.sign_up",
    # Data keys are no clinic's rows (no row-level security: ADR 0028); a value is bound to its
    # scope (a clinic's id, or the platform's) by what it is sealed with.
    "app.keys.service.seal",
    "app.keys.service.unseal",
    "app.keys.service.seal_bytes",
    "app.keys.service.unseal_bytes",
    "app.keys.service.seal_file",
    "app.keys.service.open_file",
    "app.keys.service.current_key",
    "app.keys.service.rotate_kek",
}


def _sql(statement: Select[Any]) -> str:
    return str(statement.compile(dialect=postgresql.dialect()))


def _session_in(tenant: InClinic | None) -> AsyncSession:
    # Never bound to an engine: the helpers must refuse before any SQL is sent.
    session = AsyncSession()
    if tenant is not None:
        session.info[TENANT_KEY] = tenant.clinic_id
    return session


@pytest.mark.parametrize("entered", [ELSEWHERE, None], ids=["another clinic", "no clinic"])
async def test_lookups_refuse_a_session_in_another_clinic(entered: InClinic | None) -> None:
    session = _session_in(entered)
    item = uuid.uuid4()
    with pytest.raises(
        TenancyError, match=f"^the session is in clinic {entered and entered.clinic_id}, not "
    ):
        await find(session, HERE, Pet, item)
    with pytest.raises(TenancyError):
        await get_or_404(session, HERE, Pet, item, "pet")
    with pytest.raises(TenancyError):
        await referenced(session, HERE, Pet, item, "pet_id", "pet")


async def test_a_transaction_never_moves_to_another_clinic() -> None:
    # Refused before any SQL: work for another clinic takes a transaction of its own. The
    # message names both clinics: it is a bug report.
    moved = f"this transaction is in clinic {HERE.clinic_id}; {ELSEWHERE.clinic_id} needs its own"
    with pytest.raises(TenancyError, match=f"^{moved}$"):
        await enter_tenant(_session_in(HERE), ELSEWHERE.clinic_id)


def test_of_clinic_scopes_tenant_tables_by_tenant_id_and_the_clinic_by_its_id() -> None:
    assert "pets.tenant_id = " in _sql(of_clinic(HERE, Pet))
    assert "clinics.id = " in _sql(of_clinic(HERE, Clinic))


def test_a_global_table_has_no_clinic_criterion() -> None:
    with pytest.raises(TenancyError, match=r"^User is not a clinic's table$"):
        belongs_to(HERE, User)


def _domain_services() -> list[tuple[str, inspect.Signature]]:
    found = []
    for module in pkgutil.iter_modules(app.__path__):
        if not module.ispkg or module.name in {"auth", "billing", "db", "kit"}:
            continue
        try:
            service = importlib.import_module(f"app.{module.name}.service")
        except ModuleNotFoundError:
            continue
        for name, function in inspect.getmembers(service, inspect.isfunction):
            if function.__module__ == service.__name__ and not name.startswith("_"):
                found.append((f"{service.__name__}.{name}", inspect.signature(function)))
    return found


def test_every_domain_service_with_a_session_or_a_query_takes_the_tenant() -> None:
    services = _domain_services()
    assert services
    missing = [
        name
        for name, signature in services
        # A Select is a query a route runs: it must start from the tenant's clinic too.
        if (
            "session" in signature.parameters
            or str(signature.return_annotation).startswith("Select")
        )
        and name not in NO_TENANT
        and not any(p.annotation in {"Tenant", "Principal"} for p in signature.parameters.values())
    ]
    assert not missing, f"service functions with a session or query but no tenant: {missing}"
