"""The fields billing reads from Stripe exist, with the types it expects, in Stripe's objects.

``app.billing.stripe_fields.STRIPE_FIELDS`` lists every field path the billing code reads, per
Stripe object. Two checks keep it honest:

* against Stripe's published example objects (``fixtures/stripe/fixtures3.json``): every
  listed path is there with a value of a declared type (exact JSON types: a bool is not an
  int; null only where ``NoneType`` is declared), so a field Stripe renamed, moved (as basil
  moved the period to ``items.data[]`` and an invoice's subscription to ``parent``) or
  retyped fails here, before a webhook does in production;
* against the code: events of every handled type (and the ignored kinds) go through
  ``receive`` and ``apply_event`` for real (database, the SDK against the fake Stripe API),
  every object wrapped so that each key read is recorded, including the subscription and
  customer the handler retrieves. Every recorded path must be listed, and every listed one
  read: the list cannot drift from the code either way.

A ``metadata`` hash holds our keys, not Stripe's: reading it is a path; its keys (only
``clinic_id``) are checked apart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.billing import intake, stripe_api, stripe_fields, sync
from app.billing.plans import Plan
from app.billing.stripe_api import Stripe
from app.settings import Settings
from tests.harness.billing import PRICES
from tests.harness.stripe.events import (
    checkout_session,
    event,
    invoice,
    new_id,
    official,
    subscription,
)
from tests.harness.stripe.server import FakeStripe
from tests.harness.world import World

FIELDS = stripe_fields.STRIPE_FIELDS
METADATA_KEYS = {"clinic_id"}


def declared(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def values_at(obj: dict[str, Any], path: str) -> list[Any]:
    """Every value at ``path`` (``[]``: each item of a list, which must not be empty)."""
    found: list[Any] = [obj]
    walked = ""
    for segment in path.split("."):
        name = segment.removesuffix("[]")
        walked = f"{walked}.{name}" if walked else name
        following: list[Any] = []
        for value in found:
            assert isinstance(value, dict), f"{walked}: inside a {type(value).__name__}"
            assert name in value, f"{walked}: no such field"
            if segment.endswith("[]"):
                items = value[name]
                assert isinstance(items, list), f"{walked}: not a list"
                assert items, f"{walked}: an empty list shows no item's fields"
                following.extend(items)
                walked += "[]"
            else:
                following.append(value[name])
        found = following
    return found


DECLARED = [(obj, path, types) for obj, paths in FIELDS.items() for path, types in paths.items()]


@pytest.mark.parametrize(
    ("resource", "path", "types"), DECLARED, ids=[f"{o}:{p}" for o, p, _ in DECLARED]
)
def test_a_declared_path_is_in_stripes_example_object(
    resource: str, path: str, types: type | tuple[type, ...]
) -> None:
    accepted = declared(types)
    for value in values_at(official(resource), path):
        # Exact JSON types: isinstance would let a bool pass for an int.
        assert type(value) in accepted, (
            f"{resource}.{path} is {type(value).__name__} ({value!r}) in Stripe's example,"
            f" declared {[t.__name__ for t in accepted]}"
        )


def test_the_declared_objects_are_stripes() -> None:
    for resource in FIELDS:
        assert official(resource)["object"] == resource


# -- what the code reads ----------------------------------------------------------------------
@dataclass
class Recorder:
    paths: set[tuple[str, str]] = field(default_factory=set)
    metadata_keys: set[str] = field(default_factory=set)

    def note(self, resource: str, path: str, key: object) -> None:
        if path.rsplit(".", 1)[-1] == "metadata":
            self.metadata_keys.add(str(key))  # ours; `metadata` itself was noted reading it
        else:
            self.paths.add((resource, f"{path}.{key}" if path else str(key)))

    def wrap(self, value: Any, resource: str, path: str = "") -> Any:
        if path == "data.object" and resource == "event":
            resource, path = value["object"], ""  # the event's object: a Stripe object
        if isinstance(value, dict):
            return Recording(self, resource, path, value)
        if isinstance(value, list):
            return [self.wrap(item, resource, f"{path}[]") for item in value]
        return value


class Recording(dict[str, Any]):
    """A JSON object that notes every key the code reads from it."""

    def __init__(
        self, recorder: Recorder, resource: str, path: str, source: dict[str, Any]
    ) -> None:
        super().__init__(
            {
                key: recorder.wrap(value, resource, f"{path}.{key}" if path else key)
                for key, value in source.items()
            }
        )
        self._where = (recorder, resource, path)

    def _note(self, key: object) -> None:
        recorder, resource, path = self._where
        recorder.note(resource, path, key)

    def __getitem__(self, key: str) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Records reads from events and from what the Stripe client retrieves (the SDK's answer,
    from the fake Stripe API, as the client turns it into plain JSON)."""
    found = Recorder()
    plain = stripe_api._plain

    def recording(obj: Any) -> dict[str, Any]:
        value = plain(obj)
        wrapped: dict[str, Any] = found.wrap(value, value["object"])
        return wrapped

    monkeypatch.setattr(stripe_api, "_plain", recording)
    return found


def customer_of(clinic_id: uuid.UUID | None) -> dict[str, Any]:
    obj = official("customer")
    obj.update(
        id=new_id("cus_", 14),
        metadata={"clinic_id": str(clinic_id)} if clinic_id else {},
        discount=None,
    )
    return obj


Build = Callable[[dict[str, Any], uuid.UUID], dict[str, Any]]


def of_subscription(kind: str) -> Build:
    return lambda sub, clinic: event(kind, sub)


def checkout(mode: str = "subscription") -> Build:
    return lambda sub, clinic: event(
        "checkout.session.completed",
        checkout_session(
            customer=sub["customer"],
            subscription=sub["id"],
            client_reference_id=str(clinic),
            mode=mode,
        ),
    )


def of_invoice(kind: str, *, clinic_in_metadata: bool = False) -> Build:
    def build(sub: dict[str, Any], clinic: uuid.UUID) -> dict[str, Any]:
        obj = invoice(customer=sub["customer"], subscription=sub["id"], status="paid")
        if clinic_in_metadata:
            obj["parent"]["subscription_details"]["metadata"] = {"clinic_id": str(clinic)}
        return event(kind, obj)

    return build


@dataclass(frozen=True)
class Case:
    build: Build
    outcome: str
    # Whose metadata names the clinic: the customer's, the subscription's, both, neither.
    customer_names_clinic: bool = True
    subscription_names_clinic: bool = True


CASES: dict[str, Case] = {
    **{kind: Case(of_subscription(kind), "processed") for kind in sync.SUBSCRIPTION_EVENTS},
    **{kind: Case(of_invoice(kind), "processed") for kind in sync.INVOICE_EVENTS},
    "checkout.session.completed": Case(checkout(), "processed"),
    "invoice naming its clinic": Case(
        of_invoice("invoice.paid", clinic_in_metadata=True), "processed"
    ),
    "subscription without clinic metadata": Case(
        of_subscription("customer.subscription.updated"),
        "processed",
        subscription_names_clinic=False,
    ),
    "payment checkout": Case(checkout(mode="payment"), "ignored"),
    "another product's customer": Case(
        of_invoice("invoice.paid"),
        "ignored",
        customer_names_clinic=False,
        subscription_names_clinic=False,
    ),
    "unhandled type": Case(
        lambda sub, clinic: event("customer.created", customer_of(clinic)), "ignored"
    ),
}


async def test_every_path_the_code_reads_is_declared_and_every_declared_one_is_read(
    recorder: Recorder,
    world: World,
    stripe: FakeStripe,
    settings: Settings,
    superuser_engine: AsyncEngine,
) -> None:
    assert set(sync.HANDLED) <= set(CASES)
    client = Stripe(settings)
    read_by: dict[tuple[str, str], list[str]] = {}
    try:
        for name, case in CASES.items():
            clinic = await world.clinic()
            customer = stripe.put_customer(
                customer_of(clinic.id if case.customer_names_clinic else None)
            )
            sub = stripe.put_subscription(
                subscription(
                    customer=customer["id"],
                    status="active",
                    price=PRICES[Plan.professional],
                    clinic_id=str(clinic.id) if case.subscription_names_clinic else None,
                    trial_end=int(time.time()) + 3 * 24 * 3600,
                )
            )
            recorder.paths.clear()
            evt = recorder.wrap(case.build(sub, clinic.id), "event")
            async with world.session() as session:
                assert await intake.receive(session, evt)
                outcome = await sync.apply_event(session, settings, client, evt)
            assert outcome.status == case.outcome, (name, outcome)
            for path in recorder.paths:
                read_by.setdefault(path, []).append(name)
    finally:
        await client.close()

    listed = {(resource, path) for resource, paths in FIELDS.items() for path in paths}
    undeclared = {f"{r}:{p}": cases for (r, p), cases in read_by.items() if (r, p) not in listed}
    assert not undeclared, f"read but not in STRIPE_FIELDS: {undeclared}"
    unread = sorted(f"{r}:{p}" for r, p in listed - set(read_by))
    assert not unread, f"in STRIPE_FIELDS, read by no case: {unread}"
    assert recorder.metadata_keys == METADATA_KEYS
