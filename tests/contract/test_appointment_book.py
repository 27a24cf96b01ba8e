"""Random sequences of work on one clinic's appointment book and records, against a model.

Hypothesis books, reschedules and moves appointments along their status flow, and writes,
corrects, signs, locks and amends medical records, all through the HTTP API as the clinic's
owner. A reference model written from the documented rules (not imported from the app, so
that a change to the app's rules shows up as a disagreement) predicts every answer:

* a booking or reschedule is refused with 409 ``booking-conflict`` exactly when an active
  appointment (any status but cancelled and no-show) of the same vet, or in the same room,
  overlaps the half-open period ``[starts_at, ends_at)``; otherwise it is taken;
* a status change is taken exactly when the flow allows it, and only scheduled or confirmed
  appointments can be rescheduled (409 ``conflict`` otherwise, whatever the body);
* a locked record refuses corrections (409 ``record-locked``) and keeps its text; addenda
  are always accepted.

After every step the whole book (all pages) must equal the model, no two active appointments
of one vet or one room may overlap in what the API shows, and every record, locked ones read
one by one, must hold the model's text. Times sit on a 15-minute grid over three hours of one
day, with two vets and two rooms, so overlaps, back-to-back bookings and freed slots are
frequent. So this is also the scheduling property: any sequence of booking attempts leaves a
non-overlapping book, and the 409s are exactly the overlaps the model predicts.

The app runs in process with its lifespan on its own database, emptied after every run so that
a failing run replays (tests.harness.blocking). A tenth of the profile's examples, 30 steps
each: about 35 s on a 2-core machine (pr profile: 17 runs, 271 steps).
"""

from __future__ import annotations

import datetime as dt
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
    precondition,
    rule,
)
from sqlalchemy import update

from app.auth.models import Role
from app.kit.clock import utcnow
from app.records.models import MedicalRecord
from app.settings import Settings
from fixtures.clinics import add_member
from fixtures.factories import (
    AppointmentTypeFactory,
    CustomerFactory,
    PetFactory,
    RoomFactory,
    UserFactory,
    create,
)
from tests.harness import tally
from tests.harness.api import assert_problem
from tests.harness.blocking import Blocking, run_machine
from tests.harness.world import ClinicWorld, World

STEPS = "appointment book steps"
EXAMPLES = "appointment book runs"

# The model's own copy of the documented flow: importing app.appointments.rules would make the
# oracle agree with whatever the app does.
FLOW: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"confirmed", "checked_in", "cancelled", "no_show"}),
    "confirmed": frozenset({"checked_in", "cancelled", "no_show"}),
    "checked_in": frozenset({"in_exam", "cancelled"}),
    "in_exam": frozenset({"completed"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
    "no_show": frozenset(),
}
INACTIVE = frozenset({"cancelled", "no_show"})  # a completed visit still took its slot
RESCHEDULABLE = frozenset({"scheduled", "confirmed"})

DAY = dt.datetime(utcnow().year + 1, 3, 4, 9, 0, tzinfo=dt.UTC)
"""Next year's 4 March: within the service's booking horizon of now."""
SLOT = dt.timedelta(minutes=15)
TYPE_MINUTES = 45  # unlike any explicit length below, so a wrong default shows
DEFAULT_MINUTES = 15  # the service's length when neither ends_at nor a type says
SLOTS = st.integers(min_value=0, max_value=11)
LENGTHS = st.sampled_from((15, 30, 45, 60))
ROOMS = st.sampled_from((None, 0, 1))
VETS = st.integers(min_value=0, max_value=1)
SOAP = ("subjective", "objective", "assessment", "plan")
TEXTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@dataclass
class Booked:
    pet: int
    vet: int
    room: int | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str = "scheduled"

    @property
    def active(self) -> bool:
        return self.status not in INACTIVE


@dataclass
class Note:
    pet: int
    text: dict[str, str]
    signed: bool = False
    locked: bool = False
    addenda: list[str] = field(default_factory=list)


def overlap(
    a_start: dt.datetime, a_end: dt.datetime, b_start: dt.datetime, b_end: dt.datetime
) -> bool:
    """Half-open periods, as PostgreSQL's ``[)`` ranges: back to back is no overlap."""
    return a_start < b_end and b_start < a_end


class AppointmentBookMachine(RuleBasedStateMachine):
    http: ClassVar[Blocking]
    world: ClassVar[World]

    appointments = Bundle("appointments")
    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.book: dict[str, Booked] = {}
        self.notes: dict[str, Note] = {}
        # The text each record held when it locked: nothing may change it afterwards.
        self.originals: dict[str, dict[str, str]] = {}
        tally.count(EXAMPLES)

    # -- the clinic -------------------------------------------------------------------------------
    @initialize()
    def open_clinic(self) -> None:
        """Arranged through the factories: fast, and the same every run."""
        clinic: ClinicWorld = self.http.run(self.world.clinic, (Role.vet, Role.receptionist))
        self.clinic_id = clinic.id
        self.headers = clinic.owner.headers
        arranged = self.http.run(self.arrange, clinic)
        self.vets = [str(clinic.setup.staff[Role.vet].id), arranged["vet"]]
        self.rooms, self.pets = arranged["rooms"], arranged["pets"]
        self.type_id = arranged["type"]

    async def arrange(self, clinic: ClinicWorld) -> dict[str, Any]:
        async with self.world.session(clinic.id) as session:
            vet = await create(session, UserFactory)
            await add_member(session, vet, Role.vet)
            location = clinic.setup.location.id
            rooms = [await create(session, RoomFactory, location_id=location) for _ in range(2)]
            customer = await create(session, CustomerFactory)
            pets = [await create(session, PetFactory, customer_id=customer.id) for _ in range(3)]
            kind = await create(
                session, AppointmentTypeFactory, default_duration_minutes=TYPE_MINUTES
            )
        return {
            "vet": str(vet.id),
            "rooms": [str(room.id) for room in rooms],
            "pets": [str(pet.id) for pet in pets],
            "type": str(kind.id),
        }

    def teardown(self) -> None:
        self.http.empty()

    # -- helpers ----------------------------------------------------------------------------------
    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, url, headers=self.headers, **kwargs)
        assert response.status_code < 500, response.text
        return response

    def clashes(
        self, vet: int, room: int | None, start: dt.datetime, end: dt.datetime, skip: str = ""
    ) -> set[str]:
        """What the model says a booking of this vet and room would collide with."""
        causes = set()
        for key, other in self.book.items():
            if key == skip or not other.active:
                continue
            if overlap(start, end, other.starts_at, other.ends_at):
                if other.vet == vet:
                    causes.add("vet")
                if room is not None and other.room == room:
                    causes.add("room")
        return causes

    @staticmethod
    def refused_as(response: httpx.Response, causes: set[str]) -> None:
        assert_problem(response, 409, "booking-conflict")
        detail = response.json()["detail"]
        # With both at fault, the database names whichever constraint it checked first.
        assert any(cause in detail for cause in causes), (causes, detail)

    def pages(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            response = self.call("GET", url, params=params)
            assert response.status_code == 200, response.text
            items += response.json()["items"]
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return items

    # -- the appointment book ---------------------------------------------------------------------
    @rule(
        target=appointments,
        pet=st.integers(min_value=0, max_value=2),
        vet=VETS,
        room=ROOMS,
        slot=SLOTS,
        minutes=st.one_of(LENGTHS, st.none()),
        typed=st.booleans(),
    )
    def book_appointment(
        self, pet: int, vet: int, room: int | None, slot: int, minutes: int | None, typed: bool
    ) -> Any:
        """``minutes=None`` leaves ``ends_at`` out: the type's length, or the default one."""
        tally.count(STEPS)
        start = DAY + slot * SLOT
        length = minutes or (TYPE_MINUTES if typed else DEFAULT_MINUTES)
        end = start + dt.timedelta(minutes=length)
        body: dict[str, Any] = {
            "pet_id": self.pets[pet],
            "vet_id": self.vets[vet],
            "room_id": None if room is None else self.rooms[room],
            "starts_at": start.isoformat(),
        }
        if minutes is not None:
            body["ends_at"] = end.isoformat()
        if typed:
            body["appointment_type_id"] = self.type_id
        response = self.call("POST", "/api/v1/appointments", json=body)
        causes = self.clashes(vet, room, start, end)
        if causes:
            self.refused_as(response, causes)
            return multiple()
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["status"] == "scheduled"
        assert dt.datetime.fromisoformat(created["ends_at"]) == end, created
        self.book[created["id"]] = Booked(pet, vet, room, start, end)
        return created["id"]

    @rule(
        appointment=appointments,
        slot=SLOTS,
        minutes=st.one_of(LENGTHS, st.none()),
        vet=st.one_of(st.none(), VETS),
        room=st.one_of(st.just("keep"), ROOMS),
    )
    def reschedule(
        self, appointment: str, slot: int, minutes: int | None, vet: int | None, room: Any
    ) -> None:
        """``minutes=None`` moves only the start (the end stays); ``vet=None`` keeps the vet,
        ``room="keep"`` the room, while ``room=None`` clears it."""
        tally.count(STEPS)
        booked = self.book[appointment]
        start = DAY + slot * SLOT
        end = booked.ends_at if minutes is None else start + dt.timedelta(minutes=minutes)
        body: dict[str, Any] = {"starts_at": start.isoformat()}
        if minutes is not None:
            body["ends_at"] = end.isoformat()
        if vet is not None:
            body["vet_id"] = self.vets[vet]
        if room != "keep":
            body["room_id"] = None if room is None else self.rooms[room]
        response = self.call("PATCH", f"/api/v1/appointments/{appointment}", json=body)
        new_vet = booked.vet if vet is None else vet
        new_room = booked.room if room == "keep" else room
        if booked.status not in RESCHEDULABLE:
            assert_problem(response, 409, "conflict")
            return
        if end <= start:
            assert_problem(response, 422, "validation-error")
            assert response.json()["errors"][0]["loc"] == ["body", "ends_at"], response.text
            return
        causes = self.clashes(new_vet, new_room, start, end, skip=appointment)
        if causes:
            self.refused_as(response, causes)
            return
        assert response.status_code == 200, response.text
        booked.vet, booked.room, booked.starts_at, booked.ends_at = new_vet, new_room, start, end

    @rule(appointment=appointments, allowed=st.booleans(), data=st.data())
    def change_status(self, appointment: str, allowed: bool, data: st.DataObject) -> None:
        """A move the flow allows, or one it does not (the only kind left from a final
        status): drawn on purpose, as most of the statuses are refused from most others."""
        tally.count(STEPS)
        booked = self.book[appointment]
        moves = FLOW[booked.status] if allowed else set(FLOW) - FLOW[booked.status]
        status = data.draw(st.sampled_from(sorted(moves or FLOW)), label="status")
        response = self.call(
            "POST", f"/api/v1/appointments/{appointment}/status", json={"status": status}
        )
        if status not in FLOW[booked.status]:
            assert_problem(response, 409, "conflict")
            return
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
        booked.status = status

    # -- medical records --------------------------------------------------------------------------
    @rule(
        target=records,
        pet=st.integers(min_value=0, max_value=2),
        appointment=st.one_of(st.none(), appointments),
        texts=st.tuples(TEXTS, TEXTS, TEXTS, TEXTS),
    )
    def write_record(
        self, pet: int, appointment: str | None, texts: tuple[str, str, str, str]
    ) -> Any:
        tally.count(STEPS)
        text = dict(zip(SOAP, texts, strict=True))
        body = {"pet_id": self.pets[pet], "appointment_id": appointment, **text}
        response = self.call("POST", "/api/v1/medical-records", json=body)
        if appointment is not None and self.book[appointment].pet != pet:
            assert_problem(response, 409, "conflict")
            return multiple()
        assert response.status_code == 201, response.text
        self.notes[response.json()["id"]] = Note(pet, text)
        return response.json()["id"]

    @rule(record=records, part=st.sampled_from(SOAP), text=TEXTS)
    def correct_record(self, record: str, part: str, text: str) -> None:
        tally.count(STEPS)
        self.correct(record, part, text)

    def correct(self, record: str, part: str, text: str) -> None:
        note = self.notes[record]
        response = self.call("PATCH", f"/api/v1/medical-records/{record}", json={part: text})
        if note.locked:
            assert_problem(response, 409, "record-locked")
            return
        assert response.status_code == 200, response.text
        note.text[part] = text

    @rule(record=records)
    def sign_record(self, record: str) -> None:
        tally.count(STEPS)
        note = self.notes[record]
        response = self.call("POST", f"/api/v1/medical-records/{record}/sign")
        if note.signed:
            assert_problem(response, 409, "conflict")
            return
        assert response.status_code == 200, response.text
        signed = response.json()
        locks_at = dt.datetime.fromisoformat(signed["locks_at"])
        assert locks_at - dt.datetime.fromisoformat(signed["signed_at"]) == dt.timedelta(hours=24)
        assert signed["locked"] is False
        note.signed = True

    @precondition(lambda self: any(n.signed and not n.locked for n in self.notes.values()))
    @rule(data=st.data(), part=st.sampled_from(SOAP), text=TEXTS.filter(bool))
    def day_passes(self, data: st.DataObject, part: str, text: str) -> None:
        """A signed record locks 24 hours later; a test cannot wait that long, so its
        ``locks_at`` is moved into the past in the database (as the service's role, through
        row-level security, like any write of the app). Then at once a correction, refused,
        and an addendum, taken: the other rules reach a locked record only by chance."""
        tally.count(STEPS)
        signed = sorted(key for key, n in self.notes.items() if n.signed and not n.locked)
        record = data.draw(st.sampled_from(signed), label="record")
        self.http.run(self.lock, uuid.UUID(record))
        note = self.notes[record]
        note.locked = True
        self.originals[record] = dict(note.text)
        self.correct(record, part, text)
        self.amend(record, text)

    async def lock(self, record: uuid.UUID) -> None:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        async with self.world.session(self.clinic_id) as session:
            await session.execute(
                update(MedicalRecord).where(MedicalRecord.id == record).values(locks_at=past)
            )

    @rule(record=records, text=TEXTS.filter(bool))
    def amend_record(self, record: str, text: str) -> None:
        tally.count(STEPS)
        self.amend(record, text)

    def amend(self, record: str, text: str) -> None:
        response = self.call(
            "POST", f"/api/v1/medical-records/{record}/addenda", json={"text": text}
        )
        assert response.status_code == 201, response.text
        note = self.notes[record]
        note.addenda.append(text)
        assert [a["text"] for a in response.json()["addenda"]] == note.addenda
        assert {part: response.json()[part] for part in SOAP} == note.text

    # -- after every step -------------------------------------------------------------------------
    @invariant()
    def the_book_is_the_model(self) -> None:
        shown = {
            item["id"]: (
                item["status"],
                dt.datetime.fromisoformat(item["starts_at"]),
                dt.datetime.fromisoformat(item["ends_at"]),
                item["vet_id"],
                item["room_id"],
                item["pet_id"],
            )
            for item in self.pages("/api/v1/appointments")
        }
        expected = {
            key: (
                b.status,
                b.starts_at,
                b.ends_at,
                self.vets[b.vet],
                None if b.room is None else self.rooms[b.room],
                self.pets[b.pet],
            )
            for key, b in self.book.items()
        }
        assert shown == expected

        # Checked on the API's own answer, not only through the model: the scheduling property.
        active = [(key, *row) for key, row in shown.items() if row[0] not in INACTIVE]
        for index, (a, _, a_start, a_end, a_vet, a_room, _) in enumerate(active):
            for b, _, b_start, b_end, b_vet, b_room, _ in active[index + 1 :]:
                if overlap(a_start, a_end, b_start, b_end):
                    assert a_vet != b_vet, f"vet double-booked: {a} and {b}"
                    assert a_room is None or a_room != b_room, f"room double-booked: {a} and {b}"

    @invariant()
    def records_hold_their_text(self) -> None:
        shown = {
            item["id"]: (
                {part: item[part] for part in SOAP},
                item["signed_at"] is not None,
                item["locked"],
                [a["text"] for a in item["addenda"]],
            )
            for item in self.pages("/api/v1/medical-records")
        }
        expected = {key: (n.text, n.signed, n.locked, n.addenda) for key, n in self.notes.items()}
        assert shown == expected
        for record, original in self.originals.items():
            response = self.call("GET", f"/api/v1/medical-records/{record}")
            assert response.status_code == 200, response.text
            assert response.json()["locked"] is True
            assert {part: response.json()[part] for part in SOAP} == original


def test_any_booking_attempts_leave_a_book_without_overlaps(settings: Settings) -> None:
    run_machine(AppointmentBookMachine, settings)
