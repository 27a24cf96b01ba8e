"""A clinic day for Locust: the front desk and the vets, each with the clinic's API token.

Run by tests/load/test_load.py in its own process (Locust monkey-patches the interpreter with
gevent on import, which breaks a pytest process that already runs threads and asyncio).

Environment: ``VETIFY_LOAD_TOKEN`` (Bearer token), ``VETIFY_LOAD_STATUS_FILE`` (where the count
of HTTP statuses per endpoint is written when the run ends, for the zero-5xx check).

Endpoint names are templated (``{id}``) so that statistics group by route, not by row.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import uuid
import zoneinfo
from collections import Counter, defaultdict
from typing import Any

from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager

from app.kit.problems import MEDIA_TYPE as PROBLEM_JSON

PAGE = 50
FIRST_HOUR, LAST_HOUR = 9, 18  # the clinic books 09:00-18:00 in 15 minute slots
SLOT = dt.timedelta(minutes=15)

statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
"""HTTP status per endpoint ("GET /api/v1/pets/{id}"); 0 for a request that got no answer."""


@events.request.add_listener
def _count_status(
    request_type: str, name: str, response: Any = None, exception: Any = None, **_: Any
) -> None:
    status = getattr(response, "status_code", 0) or 0
    statuses[f"{request_type} {name}"][int(status)] += 1


@events.quitting.add_listener
def _write_statuses(**_: Any) -> None:
    path = os.environ.get("VETIFY_LOAD_STATUS_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({name: dict(counts) for name, counts in statuses.items()}, out, indent=1)


class Clinic:
    """What every user looks up once: the clinic's time zone, its vets, rooms and visit types."""

    timezone: zoneinfo.ZoneInfo | None = None
    vets: list[str] = []
    rooms: list[str] = []
    types: list[str] = []

    @classmethod
    def load(cls, user: ClinicUser) -> None:
        if cls.timezone is not None:
            return
        client = user.client
        clinic = client.get("/api/v1/clinics/current", name="/api/v1/clinics/current").json()
        staff = client.get("/api/v1/staff", name="/api/v1/staff").json()["items"]
        rooms = client.get("/api/v1/rooms", name="/api/v1/rooms").json()["items"]
        types = client.get("/api/v1/appointment-types", name="/api/v1/appointment-types")
        cls.vets = [s["user_id"] for s in staff if s["role"] in ("owner", "vet") and s["active"]]
        cls.rooms = [r["id"] for r in rooms]
        cls.types = [t["id"] for t in types.json()["items"]]
        cls.timezone = zoneinfo.ZoneInfo(clinic["timezone"])

    @classmethod
    def today(cls) -> dt.date:
        return dt.datetime.now(cls.timezone).date()


class ClinicUser(HttpUser):
    abstract = True
    wait_time = between(0.5, 2.5)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {os.environ['VETIFY_LOAD_TOKEN']}"
        Clinic.load(self)
        customers = self.client.get(
            "/api/v1/customers", params={"limit": PAGE}, name="/api/v1/customers"
        )
        pets = self.client.get("/api/v1/pets", params={"limit": PAGE}, name="/api/v1/pets")
        self.customers: list[dict[str, Any]] = customers.json()["items"]
        self.pets: list[dict[str, Any]] = pets.json()["items"]
        self.open_day: tuple[dt.date, list[dict[str, Any]]] | None = None

    # -- shared steps ----------------------------------------------------------------------------
    def day_book(self, day: dt.date, **filters: str) -> list[dict[str, Any]]:
        response = self.client.get(
            "/api/v1/appointments",
            params={"day": day.isoformat(), "limit": 200, **filters},
            name="/api/v1/appointments?day=",
        )
        items: list[dict[str, Any]] = response.json()["items"] if response.ok else []
        return items

    def open_pet(self) -> list[dict[str, Any]]:
        pet = random.choice(self.pets)
        self.client.get(f"/api/v1/pets/{pet['id']}", name="/api/v1/pets/{id}")
        response = self.client.get(
            "/api/v1/medical-records",
            params={"pet_id": pet["id"]},
            name="/api/v1/medical-records?pet_id=",
        )
        records: list[dict[str, Any]] = response.json()["items"] if response.ok else []
        return records


class FrontDesk(ClinicUser):
    """Reception: finds owners and pets, registers new ones, books visits, checks the day."""

    weight = 3

    @task(5)
    def list_customers(self) -> None:
        self.client.get("/api/v1/customers", params={"limit": 20}, name="/api/v1/customers")

    @task(4)
    def search_customers(self) -> None:
        someone = random.choice(self.customers)
        fragment = someone["last_name"][: random.randint(2, 5)]
        self.client.get("/api/v1/customers", params={"q": fragment}, name="/api/v1/customers?q=")

    @task(3)
    def search_pets(self) -> None:
        pet = random.choice(self.pets)
        self.client.get("/api/v1/pets", params={"q": pet["name"][:3]}, name="/api/v1/pets?q=")

    @task(2)
    def pets_of_customer(self) -> None:
        owner = random.choice(self.customers)
        self.client.get(
            "/api/v1/pets",
            params={"customer_id": owner["id"]},
            name="/api/v1/pets?customer_id=",
        )

    @task(4)
    def todays_appointments(self) -> None:
        self.day_book(Clinic.today())

    @task(3)
    def look_up_pet(self) -> None:
        self.open_pet()

    @task(1)
    def register_customer_and_pet(self) -> None:
        tag = uuid.uuid4().hex[:10]
        with self.client.post(
            "/api/v1/customers",
            json={
                "first_name": "Load",
                "last_name": f"Tester {tag}",
                "email": f"load-{tag}@example.com",
                "phone": f"+35191{random.randint(1000000, 9999999)}",
                "preferred_language": "pt",
                "consents": {"email": True, "sms": False},
            },
            name="/api/v1/customers",
            catch_response=True,
        ) as created:
            if created.status_code != 201:
                created.failure(f"{created.status_code}: {created.text[:200]}")
                return
            customer = created.json()
        self.customers.append(customer)
        with self.client.post(
            "/api/v1/pets",
            json={
                "customer_id": customer["id"],
                "name": random.choice(["Bolinha", "Max", "Luna", "Simba", "Nala", "Tobias"]),
                "species": random.choice(["dog", "cat", "rabbit"]),
                "sex": random.choice(["male", "female", "unknown"]),
                "date_of_birth": (
                    Clinic.today() - dt.timedelta(days=random.randint(60, 5000))
                ).isoformat(),
            },
            name="/api/v1/pets",
            catch_response=True,
        ) as pet:
            if pet.status_code != 201:
                pet.failure(f"{pet.status_code}: {pet.text[:200]}")
                return
            self.pets.append(pet.json())

    @task(2)
    def book_appointment(self) -> None:
        """Find a slot free for a vet and a room in the next two weeks, and book it.

        Usually the desk reloads the day's book first; sometimes it books from the view it
        already has open, which another desk may have booked into since. Then, as when two
        desks race for the same slot, the service answers 409 booking-conflict: that is the
        service doing its job, so it counts as a success.
        """
        stale = self.open_day is not None and random.random() < 0.3
        if stale and self.open_day is not None:
            day, book = self.open_day
        else:
            day = Clinic.today() + dt.timedelta(days=random.randint(1, 14))
            book = self.day_book(day)
            self.open_day = (day, book)
        vet = random.choice(Clinic.vets)
        room = random.choice(Clinic.rooms) if Clinic.rooms else None
        taken = [
            (dt.datetime.fromisoformat(a["starts_at"]), dt.datetime.fromisoformat(a["ends_at"]))
            for a in book
            if a["status"] not in ("cancelled", "no_show")
            and (a["vet_id"] == vet or (room is not None and a["room_id"] == room))
        ]
        opening = dt.datetime.combine(day, dt.time(FIRST_HOUR), Clinic.timezone)
        slots = [opening + i * SLOT for i in range((LAST_HOUR - FIRST_HOUR) * 4)]
        free = [s for s in slots if all(s + SLOT <= a or s >= b for a, b in taken)]
        if not free:
            return
        # Half the callers want the first appointment available, the rest a time that suits.
        starts_at = free[0] if random.random() < 0.5 else random.choice(free)
        body = {
            "pet_id": random.choice(self.pets)["id"],
            "vet_id": vet,
            "room_id": room,
            "starts_at": starts_at.isoformat(),
            "ends_at": (starts_at + SLOT).isoformat(),
            "reason": "Check-up",
        }
        with self.client.post(
            "/api/v1/appointments", json=body, name="/api/v1/appointments", catch_response=True
        ) as booked:
            expected_conflict(booked)

    @task(1)
    def readiness(self) -> None:
        self.client.get("/health/ready", name="/health/ready")


class Vet(ClinicUser):
    """A vet between consultations: their day, the next patient's chart."""

    weight = 1

    @task(4)
    def my_day(self) -> None:
        self.day_book(Clinic.today(), vet_id=random.choice(Clinic.vets))

    @task(4)
    def open_chart(self) -> None:
        records = self.open_pet()
        if records:
            record = random.choice(records)
            self.client.get(
                f"/api/v1/medical-records/{record['id']}", name="/api/v1/medical-records/{id}"
            )
            self.client.get(
                f"/api/v1/pets/{record['pet_id']}/weights", name="/api/v1/pets/{id}/weights"
            )

    @task(1)
    def clinic(self) -> None:
        self.client.get("/api/v1/clinics/current", name="/api/v1/clinics/current")


def expected_conflict(response: ResponseContextManager) -> None:
    """201, or a 409 problem (double booking): both are the service working as designed."""
    conflict = (
        response.status_code == 409
        and response.headers.get("content-type", "").startswith(PROBLEM_JSON)
        and response.json().get("status") == 409
    )
    if response.status_code == 201 or conflict:
        response.success()
    else:
        response.failure(f"{response.status_code}: {response.text[:200]}")
