"""A fleet of clinics for Locust: in every clinic a front desk and a vet (logged in, session
cookies) and an integration (the owner's API token); across the fleet, staff logging in and out,
and Stripe delivering webhooks in bursts.

Run by tests/load/test_load.py (and test_soak.py) in a process of its own: Locust monkey-patches
the interpreter with gevent on import, which breaks a pytest process that already runs threads
and asyncio.

Environment:

* ``VETIFY_LOAD_FLEET``: the fleet's manifest (tests/load/fleet.py): credentials and ids;
* ``VETIFY_LOAD_PACE``: seconds a clinic user waits between tasks, on average;
* ``VETIFY_LOAD_LOGIN_PACE``, ``VETIFY_LOAD_WEBHOOK_PACE``: seconds between log-ins, between
  webhook bursts (0: no such user);
* ``VETIFY_LOAD_WEBHOOK_SECRET``: the endpoint secret the server was started with;
* ``VETIFY_LOAD_RESULTS``: where the run's results are written when it ends: per endpoint
  class the latencies' percentiles and throughput once every user was running and warmed up
  (``VETIFY_LOAD_WARMUP`` seconds), its failures over the whole run; HTTP
  statuses per endpoint; the tenancy ledger's findings.

Every request goes through :meth:`FleetUser.call`: its status must be one expected, and every
id in its body must be one of the caller's clinic (tests/load/tenancy.py), else it is a failure.
Endpoint names are templated (``{id}``) so that statistics group by route, not by row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import time
import uuid
import zoneinfo
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from locust import HttpUser, between, constant_pacing, events, task

from app.auth.service import SESSION_COOKIE
from app.kit import csrf
from app.kit.problems import MEDIA_TYPE as PROBLEM_JSON
from fixtures.files import PNG
from tests.harness.billing import WEBHOOK
from tests.harness.stripe import events as stripe_events
from tests.harness.stripe.signing import delivery
from tests.load.slo import CLASSES, class_summary, endpoint_class
from tests.load.tenancy import Ledger

FLEET: dict[str, Any] = json.loads(Path(os.environ["VETIFY_LOAD_FLEET"]).read_text("utf-8"))
CLINICS: list[dict[str, Any]] = FLEET["clinics"]
PACE = float(os.environ.get("VETIFY_LOAD_PACE", "2"))
LOGIN_PACE = float(os.environ.get("VETIFY_LOAD_LOGIN_PACE", "0"))
WEBHOOK_PACE = float(os.environ.get("VETIFY_LOAD_WEBHOOK_PACE", "0"))
FIRST_HOUR, LAST_HOUR = 9, 18  # clinics book 09:00-18:00 in 15 minute slots
SLOT = dt.timedelta(minutes=15)
WEB_PAGES: tuple[str, ...] = ()
"""The service's own web pages (app/web), once they exist: e.g. ``("/app/today",
"/app/customers")``. Each is then fetched by the front desk as a browser would, timed in the
``page`` class; until then nothing is sent and the class stays empty."""

# -- what the run records -------------------------------------------------------------------------
ledger = Ledger()
for _clinic in CLINICS:
    ledger.seed(_clinic["id"], {uuid.UUID(value) for value in _clinic["known_ids"]})
timings: defaultdict[str, list[float]] = defaultdict(list)
failures: Counter[str] = Counter()
statuses: defaultdict[str, Counter[int]] = defaultdict(Counter)
clock: dict[str, float] = {}


WARMUP = float(os.environ.get("VETIFY_LOAD_WARMUP", "0"))
"""Seconds after every user is running before latencies count: the pool's connections opened,
statements prepared, caches filled. Failures count from the first request."""


@events.spawning_complete.add_listener
def _all_running(**_: Any) -> None:
    clock.setdefault("steady_from", time.monotonic() + WARMUP)


@events.request.add_listener
def _record(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    exception: Any = None,
    **_: Any,
) -> None:
    kind = endpoint_class(request_type, name)
    if exception is not None:
        failures[kind] += 1
    if time.monotonic() >= clock.get("steady_from", float("inf")):
        timings[kind].append(response_time)
    statuses[f"{request_type} {name}"][int(getattr(response, "status_code", 0) or 0)] += 1


@events.quitting.add_listener
def _write_results(**_: Any) -> None:
    ended = time.monotonic()
    started = clock.get("steady_from", ended)
    seconds = max(ended - started, 1e-9)
    classes = {
        kind: class_summary(timings[kind], failures[kind], seconds)
        for kind in CLASSES
        if timings[kind] or failures[kind]
    }
    results = {
        "classes": classes,
        "steady_seconds": round(ended - started, 1),
        "steady_rps": round(sum(map(len, timings.values())) / seconds, 2),
        "statuses": {name: dict(counts) for name, counts in statuses.items()},
        "tenancy": ledger.report(),
    }
    with open(os.environ["VETIFY_LOAD_RESULTS"], "w", encoding="utf-8") as out:
        json.dump(results, out, indent=1)


# -- the users ------------------------------------------------------------------------------------
class FleetUser(HttpUser):
    """A user of one clinic: the next clinic of the fleet for each new user of a class, so that
    every clinic has one of each."""

    abstract = True
    fixed_count = len(CLINICS)
    wait_time = between(0.5 * PACE, 1.5 * PACE)
    _next: itertools.count[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._next = itertools.count()

    def on_start(self) -> None:
        self.clinic = CLINICS[next(self._next) % len(CLINICS)]
        self.zone = zoneinfo.ZoneInfo(self.clinic["timezone"])
        self.customers: list[dict[str, str]] = list(self.clinic["customers"])
        self.pets: list[dict[str, str]] = list(self.clinic["pets"])
        self.records: list[dict[str, str]] = list(self.clinic["records"])

    def use_session(self, secret: str) -> None:
        """Authenticate as a logged-in browser: the session cookie (sent by hand: it is Secure
        and this server speaks plain http), the page's Origin and the CSRF token."""
        self.client.headers.update(
            {
                "Cookie": f"{SESSION_COOKIE}={secret}; {csrf.CSRF_COOKIE}={csrf.token_for(secret)}",
                "Origin": self.host or "",
                csrf.CSRF_HEADER: csrf.token_for(secret),
            }
        )

    def call(
        self,
        method: str,
        path: str,
        name: str,
        *,
        expect: tuple[int, ...] = (200,),
        clinic: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """One request: a failure unless its status is expected (a 409 must be a problem) and
        every id in its body belongs to ``clinic`` (the user's own by default). The parsed
        body, or None."""
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as answer:
            if answer.status_code not in expect:
                answer.failure(f"{answer.status_code}: {answer.text[:300]}")
                return None
            body: Any = None
            if answer.content and "json" in answer.headers.get("content-type", ""):
                body = answer.json()
                if answer.status_code == 409 and not (
                    answer.headers["content-type"].startswith(PROBLEM_JSON)
                    and body.get("status") == 409
                ):
                    answer.failure(f"409 that is not a problem: {answer.text[:300]}")
                    return None
                foreign = ledger.check(clinic or self.clinic["id"], body, f"{method} {name}")
                if foreign:
                    answer.failure(f"ids of another clinic: {sorted(map(str, foreign))[:5]}")
                    return None
            answer.success()
            return body

    # -- steps several users take ------------------------------------------------------------------
    def today(self) -> dt.date:
        return dt.datetime.now(self.zone).date()

    def day_book(self, day: dt.date, **filters: str) -> list[dict[str, Any]]:
        body = self.call(
            "GET",
            "/api/v1/appointments",
            "/api/v1/appointments?day=",
            params={"day": day.isoformat(), "limit": 200, **filters},
        )
        return list(body["items"]) if body else []

    def open_pet(self) -> list[dict[str, Any]]:
        pet = random.choice(self.pets)
        self.call("GET", f"/api/v1/pets/{pet['id']}", "/api/v1/pets/{id}")
        body = self.call(
            "GET",
            "/api/v1/medical-records",
            "/api/v1/medical-records?pet_id=",
            params={"pet_id": pet["id"]},
        )
        return list(body["items"]) if body else []

    def register_customer(self) -> dict[str, Any] | None:
        tag = uuid.uuid4().hex[:10]
        customer: dict[str, Any] | None = self.call(
            "POST",
            "/api/v1/customers",
            "/api/v1/customers",
            expect=(201,),
            json={
                "first_name": "Load",
                "last_name": f"Tester {tag}",
                "email": f"load-{tag}@example.com",
                "phone": f"+35191{random.randint(1000000, 9999999)}",
                "preferred_language": "pt",
                "consents": {"email": True, "sms": False},
            },
        )
        if customer:
            self.customers.append({"id": customer["id"], "last_name": customer["last_name"]})
        return customer


class FrontDesk(FleetUser):
    """Reception: finds owners and pets, registers new ones, books visits, checks the day."""

    def on_start(self) -> None:
        super().on_start()
        self.use_session(self.clinic["reception_session"])
        self.open_day: tuple[dt.date, list[dict[str, Any]]] | None = None

    @task(4)
    def list_customers(self) -> None:
        self.call("GET", "/api/v1/customers", "/api/v1/customers", params={"limit": 20})

    @task(4)
    def search_customers(self) -> None:
        fragment = random.choice(self.customers)["last_name"][: random.randint(2, 5)]
        self.call("GET", "/api/v1/customers", "/api/v1/customers?q=", params={"q": fragment})

    @task(3)
    def search_pets(self) -> None:
        name = random.choice(self.pets)["name"][:3]
        self.call("GET", "/api/v1/pets", "/api/v1/pets?q=", params={"q": name})

    @task(2)
    def pets_of_customer(self) -> None:
        owner = random.choice(self.customers)
        self.call(
            "GET", "/api/v1/pets", "/api/v1/pets?customer_id=", params={"customer_id": owner["id"]}
        )

    @task(4)
    def todays_appointments(self) -> None:
        self.day_book(self.today())

    @task(3)
    def look_up_pet(self) -> None:
        self.open_pet()

    @task(1)
    def register_customer_and_pet(self) -> None:
        customer = self.register_customer()
        if customer is None:
            return
        pet = self.call(
            "POST",
            "/api/v1/pets",
            "/api/v1/pets",
            expect=(201,),
            json={
                "customer_id": customer["id"],
                "name": random.choice(["Bolinha", "Max", "Luna", "Simba", "Nala", "Tobias"]),
                "species": random.choice(["dog", "cat", "rabbit"]),
                "sex": random.choice(["male", "female", "unknown"]),
                "date_of_birth": (
                    self.today() - dt.timedelta(days=random.randint(60, 5000))
                ).isoformat(),
            },
        )
        if pet:
            self.pets.append({"id": pet["id"], "name": pet["name"]})

    @task(3)
    def book_appointment(self) -> None:
        """Find a slot free for a vet and a room in the next two weeks, and book it.

        Usually the desk reloads the day's book first; sometimes it books from the view it
        already has open, which another user of the clinic may have booked into since. Then,
        as when two desks race for the same slot, the service answers 409 booking-conflict:
        the service doing its job, so it counts as a success.
        """
        if self.open_day is not None and random.random() < 0.3:
            day, book = self.open_day
        else:
            day = self.today() + dt.timedelta(days=random.randint(1, 14))
            book = self.day_book(day)
            self.open_day = (day, book)
        vet = random.choice(self.clinic["vets"])
        room = random.choice(self.clinic["rooms"])
        taken = [
            (dt.datetime.fromisoformat(a["starts_at"]), dt.datetime.fromisoformat(a["ends_at"]))
            for a in book
            if a["status"] not in ("cancelled", "no_show")
            and (a["vet_id"] == vet or a["room_id"] == room)
        ]
        opening = dt.datetime.combine(day, dt.time(FIRST_HOUR), self.zone)
        slots = [opening + i * SLOT for i in range((LAST_HOUR - FIRST_HOUR) * 4)]
        free = [s for s in slots if all(s + SLOT <= a or s >= b for a, b in taken)]
        if not free:
            return
        # Half the callers want the first appointment available, the rest a time that suits.
        starts_at = free[0] if random.random() < 0.5 else random.choice(free)
        self.call(
            "POST",
            "/api/v1/appointments",
            "/api/v1/appointments",
            expect=(201, 409),
            json={
                "pet_id": random.choice(self.pets)["id"],
                "vet_id": vet,
                "room_id": room,
                "appointment_type_id": random.choice(self.clinic["types"]),
                "starts_at": starts_at.isoformat(),
                "ends_at": (starts_at + SLOT).isoformat(),
                "reason": "Check-up",
            },
        )

    if WEB_PAGES:  # none yet: the hook for app/web

        @task(2)
        def web_page(self) -> None:
            path = random.choice(WEB_PAGES)
            self.call("GET", path, path, headers={"Accept": "text/html"})


class Vet(FleetUser):
    """A vet between consultations: their day, the next patient's chart, the notes they write
    (SOAP), sign and correct, the images they attach."""

    def on_start(self) -> None:
        super().on_start()
        self.use_session(self.clinic["vet_session"])
        self.written: list[str] = []

    @task(3)
    def my_day(self) -> None:
        self.day_book(self.today(), vet_id=self.clinic["vet_id"])

    @task(3)
    def open_chart(self) -> None:
        records = self.open_pet()
        if records:
            record = random.choice(records)
            self.call(
                "GET", f"/api/v1/medical-records/{record['id']}", "/api/v1/medical-records/{id}"
            )
            pet = record["pet_id"]
            self.call("GET", f"/api/v1/pets/{pet}/weights", "/api/v1/pets/{id}/weights")

    @task(2)
    def write_soap_note(self) -> None:
        pet = random.choice(self.pets)
        record = self.call(
            "POST",
            "/api/v1/medical-records",
            "/api/v1/medical-records",
            expect=(201,),
            json={
                "pet_id": pet["id"],
                "subjective": "Owner reports reduced appetite for two days.",
                "objective": "Alert, mild dehydration, abdomen soft and non-painful.",
                "assessment": "Mild gastroenteritis.",
                "plan": "Bland diet, fluids, recheck in 3 days if no improvement.",
                "weight_kg": round(random.uniform(2, 40), 3),
                "temperature_c": round(random.uniform(37.5, 39.5), 1),
                "heart_rate_bpm": random.randint(60, 160),
            },
        )
        if record:
            self.records.append({"id": record["id"], "pet_id": pet["id"]})
            if random.random() < 0.5:
                self.call(
                    "POST",
                    f"/api/v1/medical-records/{record['id']}/sign",
                    "/api/v1/medical-records/{id}/sign",
                )
            else:
                self.written.append(record["id"])

    @task(1)
    def correct_note(self) -> None:
        if self.written:
            record = self.written.pop()
            self.call(
                "PATCH",
                f"/api/v1/medical-records/{record}",
                "/api/v1/medical-records/{id}",
                json={"plan": "Bland diet, fluids; recheck tomorrow."},
            )

    @task(1)
    def attach_image(self) -> None:
        record = random.choice(self.records)
        self.call(
            "POST",
            f"/api/v1/medical-records/{record['id']}/attachments",
            "/api/v1/medical-records/{id}/attachments",
            expect=(201,),
            files={"file": ("radiograph.png", PNG, "image/png")},
        )

    @task(1)
    def weigh(self) -> None:
        pet = random.choice(self.pets)
        self.call(
            "POST",
            f"/api/v1/pets/{pet['id']}/weights",
            "/api/v1/pets/{id}/weights",
            expect=(201,),
            json={"weight_kg": round(random.uniform(2, 40), 3)},
        )


class Integration(FleetUser):
    """A practice-management integration with the owner's API token: syncs the book and the
    customer list, looks pets up by microchip, imports new customers."""

    def on_start(self) -> None:
        super().on_start()
        self.client.headers["Authorization"] = f"Bearer {self.clinic['integrator_token']}"

    @task(3)
    def sync_book(self) -> None:
        self.day_book(self.today() + dt.timedelta(days=random.randint(0, 7)))

    @task(2)
    def sync_customers(self) -> None:
        self.call("GET", "/api/v1/customers", "/api/v1/customers", params={"limit": 50})

    @task(1)
    def find_pet(self) -> None:
        pet = random.choice(self.pets)
        self.call("GET", "/api/v1/pets", "/api/v1/pets?q=", params={"q": pet["name"]})

    @task(1)
    def fetch_record(self) -> None:
        record = random.choice(self.records)
        self.call("GET", f"/api/v1/medical-records/{record['id']}", "/api/v1/medical-records/{id}")

    @task(1)
    def import_customer(self) -> None:
        self.register_customer()


class StaffLogin(FleetUser):
    """Staff of any clinic starting a shift: log in (argon2 verifies the password), see who
    they are, log out. Paced: log-ins cost a core for a good part of 100 ms each."""

    fixed_count = 1 if LOGIN_PACE > 0 else 0
    wait_time = constant_pacing(LOGIN_PACE)

    def on_start(self) -> None:
        """Of no clinic: each shift is someone else's."""

    @task
    def shift(self) -> None:
        clinic = random.choice(CLINICS)
        self.client.headers.clear()
        self.client.cookies.clear()
        with self.client.post(
            "/api/v1/auth/login",
            json={"email": random.choice(clinic["staff_emails"]), "password": FLEET["password"]},
            headers={"Origin": self.host or ""},
            name="/api/v1/auth/login",
            catch_response=True,
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:300]}")
                return
            if ledger.check(clinic["id"], answer.json(), "POST /api/v1/auth/login"):
                answer.failure("ids of another clinic")
                return
            secret = answer.cookies[SESSION_COOKIE]
        self.client.cookies.clear()
        self.use_session(secret)
        self.call("GET", "/api/v1/auth/me", "/api/v1/auth/me", clinic=clinic["id"])
        self.call(
            "POST", "/api/v1/auth/logout", "/api/v1/auth/logout", expect=(204,), clinic=clinic["id"]
        )


class StripeDeliveries(HttpUser):
    """Stripe's webhook in bursts, as at the turn of a billing period: signed events of
    subscriptions and invoices for the fleet's clinics, and a retry of one already delivered
    (answered as a duplicate)."""

    fixed_count = 1 if WEBHOOK_PACE > 0 else 0
    wait_time = constant_pacing(WEBHOOK_PACE)
    burst = 10

    def deliver(self, event: dict[str, Any], *, duplicate: bool) -> None:
        body, headers = delivery(event, os.environ["VETIFY_LOAD_WEBHOOK_SECRET"])
        with self.client.post(
            WEBHOOK, data=body, headers=headers, name=WEBHOOK, catch_response=True
        ) as answer:
            if answer.status_code != 200 or answer.json().get("duplicate") is not duplicate:
                answer.failure(f"{answer.status_code}: {answer.text[:300]}")

    @task
    def billing_run(self) -> None:
        sent = []
        for _ in range(self.burst):
            clinic = random.choice(CLINICS)
            customer = stripe_events.new_id("cus_", 14)
            sub = stripe_events.subscription(
                customer=customer,
                status="active",
                price="price_1VetifyProfessionalTest",
                clinic_id=clinic["id"],
            )
            kind = random.choice(["customer.subscription.updated", "invoice.paid"])
            obj = (
                sub
                if kind.startswith("customer")
                else stripe_events.invoice(customer=customer, subscription=sub["id"], status="paid")
            )
            event = stripe_events.event(kind, obj)
            self.deliver(event, duplicate=False)
            sent.append(event)
        self.deliver(random.choice(sent), duplicate=True)
