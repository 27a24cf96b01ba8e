"""The audit trail (app/audit, ADR 0027): what a write records, in its own transaction, and the
hash chain that shows an edited, deleted or reordered event."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from app import cli
from app.audit import service as audit_service
from app.audit import trail
from app.audit.service import verify
from app.auth.models import Role
from app.db.tenancy import enter_tenant
from fixtures import files
from fixtures.factories import CustomerFactory, create
from tests.harness.plugin import asgi_client
from tests.harness.world import World

CUSTOMERS = "/api/v1/customers"


def new_customer(**overrides: object) -> dict[str, object]:
    return {
        "first_name": "Alba",
        "last_name": "Quintela-Audit",
        "email": "alba.audit@example.org",
        "phone": "+351912345678",
        **overrides,
    }


async def events_of(engine, clinic_id: uuid.UUID) -> list[dict]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT * FROM audit_events WHERE tenant_id = :c ORDER BY seq"), {"c": clinic_id}
        )
        return [dict(row) for row in rows.mappings()]


async def verdict(engine, clinic_id: uuid.UUID):
    async with engine.connect() as connection:
        return await verify(connection, clinic_id)


async def test_a_write_records_who_what_which_when_and_from_where_but_no_values(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.receptionist,))
    actor = clinic.actors[Role.receptionist]
    before = len(await events_of(superuser_engine, clinic.id))

    created = await client.post(
        CUSTOMERS,
        json=new_customer(),
        headers={**actor.headers, "User-Agent": "front-desk/1.0", "X-Request-ID": "req-audit-1"},
    )
    assert created.status_code == 201, created.text
    customer_id = created.json()["id"]
    changed = await client.patch(
        f"{CUSTOMERS}/{customer_id}", json={"phone": "+351919999999"}, headers=actor.headers
    )
    assert changed.status_code == 200, changed.text
    deleted = await client.delete(f"{CUSTOMERS}/{customer_id}", headers=actor.headers)
    assert deleted.status_code == 204, deleted.text

    events = (await events_of(superuser_engine, clinic.id))[before:]
    mine = [e for e in events if e["object_id"] == uuid.UUID(customer_id)]
    assert [(e["change"], e["action"], e["object_type"]) for e in mine] == [
        ("insert", "customers:write", "customers"),
        ("update", "customers:write", "customers"),
        ("delete", "customers:write", "customers"),
    ]
    inserted, updated, _ = mine
    # Contact details are sealed together (ADR 0032): their column, and the index that moved.
    assert {"first_name", "last_name", "contact_sealed", "email_index", "phone_index"} <= set(
        inserted["fields"]
    )
    assert sorted(updated["fields"]) == ["contact_sealed", "phone_index"]
    for made in mine:
        assert made["user_id"] == actor.user.id
        assert made["role"] == "receptionist"
        assert made["credential_id"] is not None
        assert made["client_ip"]
    assert (inserted["user_agent"], inserted["request_id"]) == ("front-desk/1.0", "req-audit-1")
    stored = " ".join(str(value) for e in events for value in e.values())
    for value in ("Alba", "Quintela-Audit", "alba.audit@example.org", "+351912345678"):
        assert value not in stored  # names of fields, never their values
    assert (await verdict(superuser_engine, clinic.id)).broken is None


async def test_concurrent_writes_in_one_clinic_make_one_unbroken_chain(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.receptionist,))
    headers = clinic.actors[Role.receptionist].headers

    answers = await asyncio.gather(
        *(
            client.post(CUSTOMERS, json=new_customer(email=f"c{n}@example.org"), headers=headers)
            for n in range(12)
        )
    )

    assert [a.status_code for a in answers] == [201] * 12
    events = await events_of(superuser_engine, clinic.id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    checked = await verdict(superuser_engine, clinic.id)
    assert (checked.events, checked.broken) == (len(events), None)


async def test_the_service_role_can_neither_change_nor_delete_an_event_nor_can_the_owner(
    world: World, app_engine, superuser_engine
) -> None:
    clinic = await world.clinic(roles=())
    for engine in (app_engine, superuser_engine):
        for statement in (
            "UPDATE audit_events SET action = 'nothing'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            async with engine.connect() as connection:
                await connection.execute(
                    text("SELECT set_config('app.tenant_id', :c, false)"), {"c": str(clinic.id)}
                )
                with pytest.raises(DBAPIError) as refused:
                    await connection.execute(text(statement))
            assert refused.value.orig.sqlstate == "42501", statement  # type: ignore[union-attr]
    assert (await verdict(superuser_engine, clinic.id)).events > 0


@pytest.mark.parametrize(
    ("tamper", "seq", "words"),
    [
        (["UPDATE audit_events SET fields = '{}' WHERE tenant_id = :c AND seq = 2"], 2, "contents"),
        (["DELETE FROM audit_events WHERE tenant_id = :c AND seq = 2"], 2, "missing"),
        ([f"UPDATE audit_events SET seq = {new} WHERE tenant_id = :c AND seq = {old}"
          for old, new in ((1, -1), (3, 1), (-1, 3))], 1, "link"),
        (["DELETE FROM audit_events WHERE tenant_id = :c AND seq = (SELECT max(seq) FROM"
          " audit_events WHERE tenant_id = :c)"], None, "head"),
    ],
    ids=["edited", "deleted", "reordered", "truncated"],
)  # fmt: skip
async def test_verification_finds_the_first_event_tampered_with(
    world: World, superuser_engine, tamper: list[str], seq: int | None, words: str
) -> None:
    clinic = await world.clinic(roles=())
    for _ in range(2):
        await world.make(clinic, CustomerFactory)
    events = await events_of(superuser_engine, clinic.id)
    assert len(events) >= 4
    assert (await verdict(superuser_engine, clinic.id)).broken is None

    async with superuser_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        for statement in tamper:
            await connection.execute(text(statement), {"c": clinic.id})
        await connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))

    broken = (await verdict(superuser_engine, clinic.id)).broken
    assert broken is not None
    assert broken.seq == (seq if seq is not None else len(events))
    assert words in broken.reason


async def test_a_change_and_its_events_commit_together_or_not_at_all(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.receptionist,))
    headers = clinic.actors[Role.receptionist].headers
    before = await events_of(superuser_engine, clinic.id)

    # A failure after the events are written, before the commit: neither stays.
    def fail_after_the_trail(session: Session) -> None:
        raise RuntimeError("injected after the audit trail's write")

    event.listen(Session, "before_commit", fail_after_the_trail)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            await client.post(CUSTOMERS, json=new_customer(last_name="After"), headers=headers)
    finally:
        event.remove(Session, "before_commit", fail_after_the_trail)
    # The trail's write failing (a trigger refusing its rows): the change does not stay either.
    async with superuser_engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'injected: the trail is refused'; END $$"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events"
                " FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
            )
        )
    try:
        with pytest.raises(DBAPIError, match="the trail is refused"):
            await client.post(CUSTOMERS, json=new_customer(last_name="During"), headers=headers)
    finally:
        async with superuser_engine.begin() as connection:
            await connection.execute(text("DROP TRIGGER refuse_audit ON audit_events"))
            await connection.execute(text("DROP FUNCTION refuse_audit()"))

    async with superuser_engine.connect() as connection:
        kept = await connection.scalar(
            text("SELECT count(*) FROM customers WHERE tenant_id = :c AND last_name IN"
                 " ('After', 'During')"),
            {"c": clinic.id},
        )  # fmt: skip
    assert kept == 0
    assert await events_of(superuser_engine, clinic.id) == before
    # And the clinic's chain goes on from where it was.
    assert (
        await client.post(CUSTOMERS, json=new_customer(last_name="Later"), headers=headers)
    ).status_code == 201
    assert (await verdict(superuser_engine, clinic.id)).broken is None


async def test_vetify_audit_verify_reports_each_clinic_and_fails_on_a_broken_chain(
    world: World, superuser_engine, cli_env, capsys
) -> None:
    intact, tampered = await world.clinic(roles=()), await world.clinic(roles=())

    await asyncio.to_thread(cli.main, ["audit", "verify"])
    printed = capsys.readouterr().out
    for clinic in (intact, tampered):
        [line] = [line for line in printed.splitlines() if str(clinic.id) in line]
        assert line.startswith(f"clinic {clinic.id}: ")
        assert line.endswith(" events, intact")
    async with superuser_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        await connection.execute(
            text("UPDATE audit_events SET role = 'owner' WHERE tenant_id = :c AND seq = 1"),
            {"c": tampered.id},
        )
        await connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))

    with pytest.raises(SystemExit) as failed:
        await asyncio.to_thread(cli.main, ["audit", "verify"])
    printed = capsys.readouterr().out
    await asyncio.to_thread(cli.main, ["audit", "verify", "--clinic", str(intact.id)])
    alone = capsys.readouterr().out

    assert failed.value.code == 1
    assert f"clinic {tampered.id}: BROKEN at event 1: its contents are not what was written" in (
        printed
    )
    assert f"clinic {intact.id}: " in printed
    assert alone.splitlines() == [line for line in printed.splitlines() if str(intact.id) in line]


AUDIT = "/api/v1/audit-events"


async def test_managers_read_the_clinics_trail_by_object_member_change_and_time(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.admin, Role.receptionist))
    desk, admin = clinic.actors[Role.receptionist], clinic.actors[Role.admin]
    await world.clinic(roles=())  # another clinic's trail stays its own
    first = (await client.post(CUSTOMERS, json=new_customer(), headers=desk.headers)).json()
    second = (
        await client.post(
            CUSTOMERS, json=new_customer(email="b@example.org"), headers=admin.headers
        )
    ).json()
    changed = await client.patch(
        f"{CUSTOMERS}/{first['id']}", json={"last_name": "Changed"}, headers=desk.headers
    )
    assert changed.status_code == 200, changed.text
    stored = await events_of(superuser_engine, clinic.id)

    async def listed(**params: object) -> list[dict]:
        items, cursor = [], None
        while True:
            query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            answer = await client.get(AUDIT, params=query, headers=admin.headers)
            assert answer.status_code == 200, answer.text
            items += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return items

    everything = await listed()
    assert [e["seq"] for e in everything] == [e["seq"] for e in stored]
    assert [e["hash"] for e in everything] == [e["hash"].hex() for e in stored]
    assert everything[-1]["prev_hash"] == stored[-2]["hash"].hex()
    update = everything[-1]
    assert (update["change"], update["fields"], update["object_id"]) == (
        "update",
        ["last_name"],
        first["id"],
    )
    assert update["occurred_at"] == stored[-1]["created_at"].isoformat().replace("+00:00", "Z")

    def seqs(events: list[dict]) -> list[int]:
        return [e["seq"] for e in events]

    assert seqs(await listed(object_id=first["id"])) == [
        e["seq"] for e in stored if str(e["object_id"]) == first["id"]
    ]
    assert seqs(await listed(user_id=str(admin.user.id))) == [
        e["seq"] for e in stored if e["user_id"] == admin.user.id
    ]
    assert {e["object_id"] for e in await listed(user_id=str(admin.user.id))} == {second["id"]}
    assert seqs(await listed(change="update")) == [update["seq"]]
    assert seqs(await listed(action="customers:write", object_type="customers")) == [
        e["seq"] for e in stored if e["object_type"] == "customers"
    ]
    at = update["occurred_at"]
    assert seqs(await listed(since=at)) == [update["seq"]]
    assert seqs(await listed(until=at)) == seqs(everything)[:-1]
    assert await listed(since="2199-01-01T00:00:00Z") == []
    assert seqs(await listed(until="2199-01-01T00:00:00Z")) == seqs(everything)


async def test_opening_a_record_and_taking_a_file_are_reads_in_the_trail(
    client, world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=(Role.vet, Role.read_only))
    reader = clinic.actors[Role.read_only]
    record = await world.record(clinic)
    attachment = await world.attach(clinic, record.id, files.png_with_comment("x-ray"))
    before = len(await events_of(superuser_engine, clinic.id))

    opened = await client.get(f"/api/v1/medical-records/{record.id}", headers=reader.headers)
    taken = await client.get(f"/api/v1/attachments/{attachment.id}/content", headers=reader.headers)
    missing = await client.get(f"/api/v1/medical-records/{uuid.uuid4()}", headers=reader.headers)

    assert (opened.status_code, taken.status_code, missing.status_code) == (200, 200, 404)
    reads = (await events_of(superuser_engine, clinic.id))[before:]
    assert [
        (e["change"], e["object_type"], e["object_id"], e["action"], e["user_id"], e["fields"])
        for e in reads
    ] == [
        ("read", "medical_records", record.id, "records:read", reader.user.id, []),
        ("read", "attachments", attachment.id, "records:read", reader.user.id, []),
    ]
    assert (await verdict(superuser_engine, clinic.id)).broken is None


async def test_replacing_a_records_vaccinations_notes_their_rows_not_an_empty_record_update(
    client, world: World, superuser_engine
) -> None:
    """The record is touched (its list changed) but none of its own columns is: the trail notes
    the vaccinations inserted, not an update of the record that changed no field."""
    clinic = await world.clinic(roles=(Role.vet,))
    record = await world.record(clinic)
    before = len(await events_of(superuser_engine, clinic.id))

    changed = await client.patch(
        f"/api/v1/medical-records/{record.id}",
        json={"vaccinations": [{"vaccine": "Rabies", "given_at": "2025-03-04T10:00:00Z"}]},
        headers=clinic.actors[Role.vet].headers,
    )

    assert changed.status_code == 200, changed.text
    events = (await events_of(superuser_engine, clinic.id))[before:]
    assert [(e["change"], e["object_type"]) for e in events] == [("insert", "vaccinations")]
    assert events[0]["object_id"] == uuid.UUID(changed.json()["vaccinations"][0]["id"])


FORWARDED = [
    "192.0.2.7",
    "2001:db8::1",
    "2001:0DB8:0000:0000:0000:0000:0000:0001",
    "::ffff:192.0.2.1",
    "fe80::1%eth0",
    "198.51.100.1, 192.0.2.9",
    "x" * 300,
    "not-an-address",
    "1.2.3.4.5",
    "unknown",
    "\xff" * 60,
    "'; DROP TABLE audit_events; --",
]
"""What a client may write in X-Forwarded-For: addresses in every spelling, lists, and text of
any length."""


async def test_any_forwarded_address_is_stored_as_an_address_or_not_at_all(
    configured_app, world: World, superuser_engine
) -> None:
    """Behind a trusted proxy the peer is what X-Forwarded-For says, which a client may have
    written itself: a write still succeeds, and the trail keeps a real address or none (text
    over the column's 45 characters answered 500 before)."""
    proxy = "203.0.113.10"
    clinic = await world.clinic(roles=(Role.receptionist,))
    headers = clinic.actors[Role.receptionist].headers
    async with (
        configured_app(trusted_proxies=[proxy]) as app,
        asgi_client(app, client_ip=proxy) as http,
    ):
        made = {
            forwarded: await http.post(
                CUSTOMERS,
                json=new_customer(),
                headers={**headers, "X-Forwarded-For": forwarded.encode("latin-1")},
            )
            for forwarded in FORWARDED
        }

    events = {e["object_id"]: e for e in await events_of(superuser_engine, clinic.id)}
    for forwarded, created in made.items():
        assert created.status_code == 201, (forwarded, created.text)
        try:
            address = ipaddress.ip_address(forwarded.rsplit(",", 1)[-1].strip())
        except ValueError:
            expected = None
        else:  # an IPv6 zone (any text, any length) is no place a client is: none either
            expected = None if "%" in str(address) else str(address)
        assert events[uuid.UUID(created.json()["id"])]["client_ip"] == expected, forwarded


async def test_a_rolled_back_savepoint_takes_its_notes_with_it(
    world: World, superuser_engine
) -> None:
    clinic = await world.clinic(roles=())
    before = len(await events_of(superuser_engine, clinic.id))

    async with world.session(clinic.id) as session:
        kept = await create(session, CustomerFactory, last_name="Kept")
        savepoint = await session.begin_nested()
        await create(session, CustomerFactory, last_name="Undone")
        await savepoint.rollback()

    events = (await events_of(superuser_engine, clinic.id))[before:]
    assert [(e["change"], e["object_id"]) for e in events] == [("insert", kept.id)]
    assert (await verdict(superuser_engine, clinic.id)).broken is None


async def test_verification_reads_a_long_trail_in_batches(
    world: World, superuser_engine, monkeypatch
) -> None:
    clinic = await world.clinic(roles=())
    for _ in range(3):
        await world.make(clinic, CustomerFactory)
    total = len(await events_of(superuser_engine, clinic.id))
    monkeypatch.setattr(audit_service, "BATCH", 2)

    checked = await verdict(superuser_engine, clinic.id)

    assert (checked.events, checked.broken) == (total, None)
    assert audit_service.printable([]) == "no clinic has an audit trail yet"


async def test_a_read_is_noted_only_of_a_clinics_row_in_a_transaction(world: World) -> None:
    clinic = await world.clinic(roles=())
    async with world.session(clinic.id) as session:
        with pytest.raises(RuntimeError, match="a clinic's row"):
            trail.read(session, object())


async def test_a_rolled_back_transaction_leaves_no_notes_for_the_next_on_its_session(
    world: World, app_engine, superuser_engine
) -> None:
    clinic = await world.clinic(roles=())
    before = len(await events_of(superuser_engine, clinic.id))

    async with async_sessionmaker(app_engine, expire_on_commit=False)() as session:
        undone = await session.begin()
        await enter_tenant(session, clinic.id)
        await create(session, CustomerFactory, last_name="Undone")  # flushed: noted
        await undone.rollback()
        async with session.begin():
            await enter_tenant(session, clinic.id)
            kept = await create(session, CustomerFactory, last_name="Kept")

    events = (await events_of(superuser_engine, clinic.id))[before:]
    assert [(e["change"], e["object_id"]) for e in events] == [("insert", kept.id)]
