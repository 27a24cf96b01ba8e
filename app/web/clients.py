"""Clients and their pets: search as you type, a new client with their consent per channel, a
client's page, a new pet, a pet's profile with its weight history."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette import status
from starlette.datastructures import FormData

from app.auth.deps import requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.customers import service as customers
from app.customers.models import Customer
from app.customers.schemas import CustomerIn
from app.db.repository import get_or_404
from app.db.session import DbSession
from app.kit.pagination import paginate
from app.kit.problems import Conflict
from app.pets import service as pets
from app.pets.models import Pet, Sex, Species
from app.pets.schemas import PetIn, WeightOut
from app.web import forms
from app.web.deps import posted, read_form, view
from app.web.pages import Clinic, Viewer, render, see_other

router = APIRouter(include_in_schema=False, dependencies=[Depends(read_form)])
Reader = Annotated[Principal, Depends(requires(Action.customers_read))]
Writer = Annotated[Principal, Depends(requires(Action.customers_write))]
PetReader = Annotated[Principal, Depends(requires(Action.pets_read))]
PetWriter = Annotated[Principal, Depends(requires(Action.pets_write))]
Form = Annotated[FormData, Depends(posted)]
PAGE = 25
CLIENT_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "address_line1",
    "address_line2",
    "city",
    "postcode",
    "country",
)
CHANNELS = ("email", "whatsapp", "sms")
PET_FIELDS = ("name", "species", "breed", "sex", "date_of_birth", "microchip")


@router.get("/clients")
async def list_clients(
    request: Request,
    caller: Reader,
    session: DbSession,
    q: Annotated[str, Query(max_length=100)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    viewer, clinic = await view(session, caller)
    query = q.strip()
    rows, next_cursor = await paginate(
        session, await customers.search(session, caller, query or None), [Customer.id], cursor, PAGE
    )
    found = await customers.to_out(session, caller, rows)
    return render(
        request,
        "clients/list.html",
        viewer=viewer,
        clinic=clinic,
        q=query,
        clients=found,
        next_cursor=next_cursor,
        may_add_client=caller.can(Action.customers_write),
    )


def _client_form(
    request: Request, viewer: Viewer, clinic: Clinic, values: dict[str, str], errors: forms.Errors
) -> Response:
    return render(
        request,
        "clients/new.html",
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT if errors else status.HTTP_200_OK,
        viewer=viewer,
        clinic=clinic,
        values=values,
        errors=errors,
        channels=CHANNELS,
    )


@router.get("/clients/new")
async def new_client(request: Request, caller: Writer, session: DbSession) -> Response:
    viewer, clinic = await view(session, caller)
    return _client_form(request, viewer, clinic, {}, {})


@router.post("/clients/new")
async def create_client(
    request: Request, caller: Writer, session: DbSession, form: Form
) -> Response:
    values = forms.fields(form, CLIENT_FIELDS)
    consents = {channel: forms.checked(form, f"consents_{channel}") for channel in CHANNELS}
    checked = forms.validate(CustomerIn, {**values, "consents": consents})
    if not isinstance(checked, dict):
        customer = await customers.create(session, caller, checked, caller.user_id)
        return see_other(f"/clients/{customer.id}")
    viewer, clinic = await view(session, caller)
    shown = {**values, **{f"consents_{c}": "true" for c, given in consents.items() if given}}
    return _client_form(request, viewer, clinic, shown, checked)


@router.get("/clients/{customer_id}")
async def show_client(
    customer_id: uuid.UUID, request: Request, caller: Reader, session: DbSession
) -> Response:
    viewer, clinic = await view(session, caller)
    customer = await get_or_404(session, caller, Customer, customer_id, "customer")
    (client,) = await customers.to_out(session, caller, [customer])
    owned = await session.scalars(
        pets.search(caller, customer_id, None, None, include_deceased=True).order_by(
            Pet.name, Pet.id
        )
    )
    return render(
        request,
        "clients/show.html",
        viewer=viewer,
        clinic=clinic,
        client=client,
        pets=await pets.to_out(session, caller, owned.all()),
        channels=CHANNELS,
        may_add_pet=caller.can(Action.pets_write),
    )


def _pet_form(
    request: Request,
    viewer: Viewer,
    clinic: Clinic,
    client: Customer,
    values: dict[str, str],
    errors: forms.Errors,
) -> Response:
    return render(
        request,
        "clients/new_pet.html",
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT if errors else status.HTTP_200_OK,
        viewer=viewer,
        clinic=clinic,
        client=client,
        values=values,
        errors=errors,
        species=list(Species),
        sexes=list(Sex),
    )


@router.get("/clients/{customer_id}/pets/new")
async def new_pet(
    customer_id: uuid.UUID, request: Request, caller: PetWriter, session: DbSession
) -> Response:
    viewer, clinic = await view(session, caller)
    client = await get_or_404(session, caller, Customer, customer_id, "customer")
    return _pet_form(request, viewer, clinic, client, {}, {})


@router.post("/clients/{customer_id}/pets/new")
async def create_pet(
    customer_id: uuid.UUID, request: Request, caller: PetWriter, session: DbSession, form: Form
) -> Response:
    client = await get_or_404(session, caller, Customer, customer_id, "customer")
    values = forms.fields(form, (*PET_FIELDS, "alerts"))
    alerts = [line.strip() for line in values.get("alerts", "").splitlines() if line.strip()]
    data: dict[str, object] = {
        **{k: v for k, v in values.items() if k != "alerts"},
        "customer_id": str(customer_id),
        "neutered": forms.checked(form, "neutered"),
        "alerts": alerts,
    }
    checked = forms.validate(PetIn, data)
    if not isinstance(checked, dict):
        try:
            async with forms.undone_if_refused(session):
                pet = await pets.create(session, caller, checked)
        except Conflict as exc:  # the microchip of another pet
            checked = {"microchip": exc.detail or exc.title}
        else:
            return see_other(f"/pets/{pet.id}")
    viewer, clinic = await view(session, caller)
    if form.get("neutered") is not None:
        values["neutered"] = "true"
    return _pet_form(request, viewer, clinic, client, values, checked)


@router.get("/pets/{pet_id}")
async def show_pet(
    pet_id: uuid.UUID, request: Request, caller: PetReader, session: DbSession
) -> Response:
    viewer, clinic = await view(session, caller)
    stored = await get_or_404(session, caller, Pet, pet_id, "pet")
    (pet,) = await pets.to_out(session, caller, [stored])
    owner = await get_or_404(session, caller, Customer, pet.customer_id, "customer")
    history = [pets.weight_out(w) for w in await pets.weights(session, caller, pet_id)]
    return render(
        request,
        "clients/pet.html",
        viewer=viewer,
        clinic=clinic,
        pet=pet,
        owner=owner,
        weights=history,
        chart=_chart(history),
        may_book=caller.can(Action.appointments_write),
    )


def _chart(history: list[WeightOut]) -> dict[str, object] | None:
    """The weight history as an SVG polyline's points (the page draws it; a table beside it
    holds the same numbers for those who cannot see it)."""
    if len(history) < 2:
        return None
    width, height, pad = 480, 160, 16
    first, last = history[0].measured_at, history[-1].measured_at
    span = (last - first).total_seconds() or 1.0
    low = min(w.weight_kg for w in history)
    high = max(w.weight_kg for w in history)
    rise = (high - low) or 1.0
    points = [
        (
            round(pad + (w.measured_at - first).total_seconds() / span * (width - 2 * pad), 1),
            round(height - pad - (w.weight_kg - low) / rise * (height - 2 * pad), 1),
        )
        for w in history
    ]
    return {
        "width": width,
        "height": height,
        "points": " ".join(f"{x},{y}" for x, y in points),
        "dots": points,
    }
