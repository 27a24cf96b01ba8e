"""The audit trail's hash chain (app/audit/chain.py): one canonical encoding, and every edit,
gap, reorder or cut found at the first event it touches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.audit.chain import GENESIS, Break, Entry, Stored, canonical, first_break, link

CLINIC = uuid.UUID("01900000-0000-7000-8000-0000000000c1")
WHEN = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC)


def entry(seq: int, **changes: object) -> Entry:
    made = Entry(
        tenant_id=CLINIC,
        seq=seq,
        occurred_at=WHEN,
        user_id=uuid.UUID(int=seq),
        credential_id=None,
        role="vet",
        action="records:write",
        object_type="medical_records",
        object_id=uuid.UUID(int=1000 + seq),
        change="update",
        fields=("assessment", "plan"),
        client_ip="192.0.2.7",
        user_agent="Mozilla/5.0 (ação)",
        request_id=f"req-{seq}",
        job_id=None,
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def chain(length: int) -> list[Stored]:
    stored, prev = [], GENESIS
    for seq in range(1, length + 1):
        made = entry(seq)
        digest = link(prev, made)
        stored.append(Stored(made, prev, digest))
        prev = digest
    return stored


def head_of(events: list[Stored]) -> tuple[int, bytes] | None:
    return (events[-1].entry.seq, events[-1].hash) if events else None


def test_the_encoding_is_sorted_compact_utf8_json_with_the_time_in_utc() -> None:
    local = WHEN.astimezone(dt.timezone(dt.timedelta(hours=-3)))

    encoded = canonical(entry(1, occurred_at=local))

    assert encoded == canonical(entry(1))  # the same instant, the same bytes
    assert encoded.startswith(b'{"action":"records:write","change":"update","client_ip":')
    assert b'"occurred_at":"2026-12-06T09:30:00.000000+00:00"' in encoded
    assert b'"fields":["assessment","plan"]' in encoded
    assert b'"credential_id":null' in encoded
    assert "(ação)".encode() in encoded
    assert b", " not in encoded
    assert link(GENESIS, entry(1)) == hashlib.sha256(GENESIS + encoded).digest()


def test_an_intact_chain_and_an_empty_one_hold() -> None:
    events = chain(5)
    assert first_break(events, head_of(events)) is None
    assert first_break([], None) is None


_FIELDS = [f.name for f in dataclasses.fields(Entry) if f.name not in ("seq", "tenant_id")]
_OTHER: dict[str, object] = {
    "occurred_at": WHEN + dt.timedelta(microseconds=1),
    "user_id": uuid.UUID(int=99),
    "credential_id": uuid.UUID(int=98),
    "role": "owner",
    "action": "records:sign",
    "object_type": "pets",
    "object_id": None,
    "change": "delete",
    "fields": ("plan",),
    "client_ip": "192.0.2.8",
    "user_agent": None,
    "request_id": "req-x",
    "job_id": 7,
    "event": "lockout",  # set where it was not: a change made to look like a security event
    "outcome": "locked",
}


@given(at=st.integers(1, 6), field=st.sampled_from(_FIELDS))
def test_any_edit_of_any_field_is_found_at_the_edited_event(at: int, field: str) -> None:
    events = chain(6)
    edited = dataclasses.replace(events[at - 1].entry, **{field: _OTHER[field]})  # type: ignore[arg-type]
    events[at - 1] = dataclasses.replace(events[at - 1], entry=edited)

    broken = first_break(events, head_of(chain(6)))

    assert broken is not None
    assert (broken.seq, broken.reason) == (at, "its contents are not what was written")


@given(at=st.integers(1, 5))
def test_a_missing_event_is_found_where_it_was(at: int) -> None:
    events = chain(6)
    del events[at - 1]

    broken = first_break(events, head_of(chain(6)))

    assert broken is not None
    assert broken.seq == at
    assert f"event {at} is missing" in broken.reason


def test_events_renumbered_after_a_removal_break_the_link() -> None:
    events = chain(4)
    later = events[2]  # event 3 takes the place of the removed 2, under its number
    renumbered = dataclasses.replace(later.entry, seq=2)
    events = [events[0], Stored(renumbered, later.prev_hash, link(later.prev_hash, renumbered))]

    broken = first_break(events, head_of(events))

    assert broken is not None
    assert (broken.seq, broken.reason) == (
        2,
        "its link to the event before it does not match that event",
    )


def test_a_cut_tail_and_a_missing_head_are_found_at_the_end() -> None:
    events = chain(5)

    cut = first_break(events[:3], head_of(events))
    headless = first_break(events, None)
    rewound = first_break(events, (5, events[3].hash))

    assert cut is not None
    assert (cut.seq, cut.reason) == (5, "the head is at event 5, the events end at 3")
    assert headless is not None
    assert (headless.seq, headless.reason) == (5, "the chain has events but no head")
    assert rewound is not None
    assert rewound.seq == 5


def test_a_security_events_name_and_outcome_are_hashed_and_a_change_hashes_as_before() -> None:
    change = entry(1)
    # What a change or a read hashed before security events joined the trail (migration 0014).
    assert b'"event"' not in canonical(change)
    assert b'"outcome"' not in canonical(change)
    refused = entry(1, change="security", event="permission_denied", outcome="refused")
    assert b'"event":"permission_denied"' in canonical(refused)
    assert b'"outcome":"refused"' in canonical(refused)
    assert link(GENESIS, refused) != link(
        GENESIS, dataclasses.replace(refused, outcome="succeeded")
    )
    assert link(GENESIS, refused) != link(GENESIS, dataclasses.replace(refused, event="lockout"))


def test_a_chain_pruned_up_to_its_base_is_checked_from_there() -> None:
    events = chain(6)
    base = events[2]  # events 1 to 3 pruned by retention
    rest = events[3:]
    head = (events[-1].entry.seq, events[-1].hash)
    assert first_break(rest, head, base=(3, base.hash)) is None
    assert first_break(rest[1:], head, base=(3, base.hash)) == Break(
        4, "event 4 is missing (the next is 5)"
    )
    assert first_break(rest, head, base=(3, bytes(32))) == Break(
        4, "its link to the event before it does not match that event"
    )
    assert first_break(rest, head) == Break(1, "event 1 is missing (the next is 4)")
