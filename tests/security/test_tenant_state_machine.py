"""Random sequences of work by three clinics' staff, through the HTTP API, against a model.

Hypothesis drives creates, updates, deletes and reads of customers and pets by members of
three clinics (an owner and a receptionist each), two of whom also belong to a second clinic
with another role there, each acting with the API token of one membership. The test keeps a
model of what each clinic owns and checks, after every step, that each clinic's lists equal
its model, and that no response ever carried an id owned by another clinic than the one the
caller acts in.

The app runs in process with its lifespan, on its own database (emptied after every run),
driven from Hypothesis' synchronous rules (tests.harness.blocking).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from app.auth.models import Role, User
from app.settings import Settings
from fixtures.clinics import add_member
from tests.harness import tally
from tests.harness.blocking import Blocking, run_machine
from tests.harness.world import World

STEPS = "tenancy state machine steps"
EXAMPLES = "tenancy state machine runs"
NAMES = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)


@dataclass
class Clinic:
    id: str
    owner: dict[str, str]
    customers: dict[str, str] = field(default_factory=dict)  # id -> last name
    pets: dict[str, str] = field(default_factory=dict)  # id -> customer id


@dataclass(frozen=True)
class Actor:
    clinic: int
    role: Role
    headers: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class Ref:
    clinic: int
    id: str


class ClinicsMachine(RuleBasedStateMachine):
    http: ClassVar[Blocking]
    world: ClassVar[World]

    customers = Bundle("customers")
    pets = Bundle("pets")

    def __init__(self) -> None:
        super().__init__()
        self.clinics: list[Clinic] = []
        self.actors: list[Actor] = []
        tally.count(EXAMPLES)

    # -- helpers ----------------------------------------------------------------------------------
    def call(self, actor: Actor | None, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = actor.headers if actor else {}
        response = self.http.request(method, url, headers=headers, **kwargs)
        assert response.status_code < 500, response.text
        if actor is not None:
            self.assert_nothing_foreign(actor.clinic, response)
        return response

    def assert_nothing_foreign(self, clinic: int, response: httpx.Response) -> None:
        """No id of another clinic in the response, other than those the caller sent."""
        sent = str(response.request.url) + response.request.content.decode()
        foreign = {
            owned
            for index, other in enumerate(self.clinics)
            if index != clinic
            for owned in (other.id, *other.customers, *other.pets)
            if owned not in sent
        }
        leaked = [owned for owned in foreign if owned in response.text]
        assert not leaked, f"clinic {clinic} was shown {leaked}: {response.text[:300]}"

    # -- the world --------------------------------------------------------------------------------
    @initialize()
    def open_three_clinics(self) -> None:
        """Three clinics (through the factories: fast, and the same every run), each with an
        owner and a receptionist; clinic 0's owner also works in clinic 1 as a receptionist and
        clinic 2's owner in clinic 0 as a vet."""
        clinics = [self.http.run(self.world.clinic, (Role.receptionist,)) for _ in range(3)]
        for index, clinic in enumerate(clinics):
            self.clinics.append(Clinic(str(clinic.id), clinic.owner.headers))
            for role in (Role.owner, Role.receptionist):
                self.actors.append(Actor(index, role, clinic.actors[role].headers))
        for member, clinic, role in ((0, 1, Role.receptionist), (2, 0, Role.vet)):
            user = clinics[member].owner.user
            self.http.run(self.join, clinics[clinic].id, user, role)
            actor = self.http.run(self.world.actor, clinics[clinic].id, user)
            self.actors.append(Actor(clinic, role, actor.headers))

    async def join(self, clinic_id: uuid.UUID, user: User, role: Role) -> None:
        async with self.world.session(clinic_id) as session:
            await add_member(session, user, role)

    def teardown(self) -> None:
        self.http.empty()

    def lists(self, index: int) -> tuple[dict[str, str], dict[str, str]]:
        """What clinic ``index`` holds, as its owner sees it: customers and pets."""
        owner = Actor(index, Role.owner, self.clinics[index].owner)
        customers = self.call(owner, "GET", "/api/v1/customers", params={"limit": 200})
        pets = self.call(owner, "GET", "/api/v1/pets", params={"limit": 200})
        assert customers.json()["next_cursor"] is None
        assert pets.json()["next_cursor"] is None
        return (
            {c["id"]: c["last_name"] for c in customers.json()["items"]},
            {p["id"]: p["customer_id"] for p in pets.json()["items"]},
        )

    def actor(self, data: st.DataObject) -> Actor:
        return data.draw(st.sampled_from(self.actors), label="actor")

    # -- rules ------------------------------------------------------------------------------------
    @rule(target=customers, data=st.data(), last_name=NAMES)
    def add_customer(self, data: st.DataObject, last_name: str) -> Ref:
        tally.count(STEPS)
        actor = self.actor(data)
        response = self.call(
            actor, "POST", "/api/v1/customers", json={"first_name": "Sam", "last_name": last_name}
        )
        assert response.status_code == 201, response.text
        created = response.json()["id"]
        self.clinics[actor.clinic].customers[created] = response.json()["last_name"]
        return Ref(actor.clinic, created)

    @rule(target=pets, data=st.data(), customer=customers)
    def register_pet(self, data: st.DataObject, customer: Ref) -> Any:
        tally.count(STEPS)
        actor = self.actor(data)
        response = self.call(
            actor,
            "POST",
            "/api/v1/pets",
            json={"customer_id": customer.id, "name": "Pip", "species": "cat"},
        )
        model = self.clinics[actor.clinic]
        if customer.id not in model.customers:
            assert response.status_code == 422, response.text
            return multiple()
        assert response.status_code == 201, response.text
        model.pets[response.json()["id"]] = customer.id
        return Ref(actor.clinic, response.json()["id"])

    @rule(data=st.data(), customer=customers, last_name=NAMES)
    def rename_customer(self, data: st.DataObject, customer: Ref, last_name: str) -> None:
        tally.count(STEPS)
        actor = self.actor(data)
        url = f"/api/v1/customers/{customer.id}"
        response = self.call(actor, "PATCH", url, json={"last_name": last_name})
        model = self.clinics[actor.clinic]
        if customer.id not in model.customers:
            assert response.status_code == 404, response.text
            return
        assert response.status_code == 200, response.text
        model.customers[customer.id] = response.json()["last_name"]

    @rule(data=st.data(), customer=customers)
    def delete_customer(self, data: st.DataObject, customer: Ref) -> None:
        tally.count(STEPS)
        actor = self.actor(data)
        response = self.call(actor, "DELETE", f"/api/v1/customers/{customer.id}")
        model = self.clinics[actor.clinic]
        if customer.id not in model.customers:
            assert response.status_code == 404, response.text
        elif customer.id in model.pets.values():
            assert response.status_code == 409, response.text
        else:
            assert response.status_code == 204, response.text
            del model.customers[customer.id]

    @rule(data=st.data(), pet=pets)
    def read_pet(self, data: st.DataObject, pet: Ref) -> None:
        tally.count(STEPS)
        actor = self.actor(data)
        response = self.call(actor, "GET", f"/api/v1/pets/{pet.id}")
        model = self.clinics[actor.clinic]
        if pet.id not in model.pets:
            assert response.status_code == 404, response.text
        else:
            assert response.status_code == 200, response.text
            assert response.json()["customer_id"] == model.pets[pet.id]

    @rule(data=st.data(), pet=pets)
    def delete_pet(self, data: st.DataObject, pet: Ref) -> None:
        tally.count(STEPS)
        actor = self.actor(data)
        response = self.call(actor, "DELETE", f"/api/v1/pets/{pet.id}")
        model = self.clinics[actor.clinic]
        if pet.id not in model.pets:
            assert response.status_code == 404, response.text
        else:
            assert response.status_code == 204, response.text
            del model.pets[pet.id]

    # -- after every step -------------------------------------------------------------------------
    @invariant()
    def each_clinic_sees_exactly_its_own(self) -> None:
        for index, model in enumerate(self.clinics):
            assert self.lists(index) == (model.customers, model.pets)


def test_clinics_working_at_random_never_see_each_other(settings: Settings) -> None:
    run_machine(ClinicsMachine, settings)
