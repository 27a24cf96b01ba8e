"""A database at realistic size, built set-based in seconds (issue 18).

    python -m tests.load.bigdata --size large --url postgresql://vetify_owner:...@host/db

Here, in tests/load, rather than as ``vetify demo --size``: it is test data for the plan test
(tests/load/test_plans.py) and for measuring, it needs the owner's URL of a migrated database
(``vetify demo`` serves the embedded one through the service's role), and it must never reach a
production install, whose CLI ships app/ only.

The rows have the shapes of the factories (fixtures/factories.py, fixtures/demo.py,
fixtures/clinics.py): clinics with a location, rooms, appointment types, a billing account on
trial, an owner, vets and a receptionist; pet owners with consents; pets with weights;
appointments (past ones completed, cancelled or no-show, future ones scheduled or confirmed);
signed, locked medical records with vaccinations and prescriptions. Every NOT NULL, CHECK,
foreign key and exclusion constraint holds, because the database checks them as the rows go in:
each vet has one appointment per half-hour slot, a room is booked by one vet only.

**Skew.** Clinic *k* (from 1) gets a share of every kind of row proportional to ``k ** -0.8``
(Zipf): at ``large`` clinic 1, the one the plan test queries as, holds 6.4% of the rows
(about 13,000 customers and 129,000 appointments), clinic 1,000 a few dozen customers.

**How.** One ``INSERT ... SELECT`` per table over ``generate_series``, no row built in Python.
Ids are derived from (kind, clinic, ordinal) by md5, so a pet finds its owner's id, an
appointment its pet's and its vet's, without a lookup table; they sort in no particular order
(like the app's UUIDv7s from clinics interleaved in time), and rows are inserted in the order of
their time (appointments by start), so one clinic's rows are spread over the table's pages as in
a real database rather than packed together. Loaded as the owner role in one transaction:
row-level security is forced on the owner too, and COPY or INSERT for many clinics at once cannot
run under it, so the transaction lifts ``FORCE ROW LEVEL SECURITY`` from the tables it loads and
puts it back before it commits (nobody else sees the tables meanwhile). The locked-record
trigger on vaccinations and prescriptions is off as well for the same transaction: the records
are signed and locked as they go in. VACUUM ANALYZE afterwards (statistics, visibility map).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import secrets
import time
import uuid
from dataclasses import asdict, dataclass

import asyncpg

from app.customers import service as customers
from app.customers.schemas import Contact
from app.db.migrate import plain_url
from app.keys import blind
from app.keys import service as keys
from app.kit import sealing
from app.kit.sealing import KeyWrapper
from app.records import service as records
from app.records.schemas import Notes
from app.settings import Settings
from fixtures.factories import DEFAULT_PASSWORD_HASH


@dataclass(frozen=True)
class Size:
    clinics: int
    customers: int
    pets: int
    appointments: int
    records: int


SIZES: dict[str, Size] = {
    # Built in about 5 s here: for the pr set's load stage (.ci/run).
    "smoke": Size(clinics=50, customers=5_000, pets=7_500, appointments=50_000, records=25_000),
    # About 46 s: for trying an index by hand.
    "medium": Size(
        clinics=300, customers=40_000, pets=60_000, appointments=400_000, records=200_000
    ),
    # 260-290 s (appointments 190 s of it: their eight indexes, two GiST): nightly.
    "large": Size(
        clinics=1_000,
        customers=200_000,
        pets=300_000,
        appointments=2_000_000,
        records=1_000_000,
    ),
}


def _proportioned(appointments: int) -> Size:
    """The largest table (appointments) at ``appointments`` rows, the rest as ``large`` has
    them for its 2 million."""
    return Size(
        clinics=max(5, appointments // 2_000),
        customers=appointments // 10,
        pets=appointments * 3 // 20,
        appointments=appointments,
        records=appointments // 2,
    )


# Cost growth (issue 18, `python -m tests.load.bench --size ...`): the same paths at 10
# thousand, 1 million and 10 million appointments.
SIZES |= {
    "10k": _proportioned(10_000),
    "1m": _proportioned(1_000_000),
    "10m": _proportioned(10_000_000),
}
SKEW = 0.8
"""Clinic k's share of the rows is proportional to k ** -SKEW."""
APPOINTMENTS_PER_VET = 5_000
"""A clinic has one vet per this many appointments (at least one)."""
SLOTS_PER_DAY = 16
"""Half-hour slots from 08:00 (UTC); an appointment takes 20 minutes of one."""
SPAN_DAYS = 730
PAST_DAYS = 600
"""Appointments run from PAST_DAYS ago to SPAN_DAYS - PAST_DAYS ahead."""

FIRST_NAMES = [
    "Ana",
    "Bruno",
    "Carla",
    "Diogo",
    "Eva",
    "Filipe",
    "Gabriela",
    "Hugo",
    "Ines",
    "Joao",
    "Katia",
    "Luis",
    "Marta",
    "Nuno",
    "Olga",
    "Pedro",
    "Rita",
    "Sofia",
    "Tiago",
    "Vera",
    "Miguel",
    "Beatriz",
    "Ricardo",
    "Joana",
    "Andre",
    "Catarina",
    "Paulo",
    "Helena",
    "Rui",
    "Teresa",
]
LAST_NAMES = [
    "Silva",
    "Santos",
    "Ferreira",
    "Pereira",
    "Oliveira",
    "Costa",
    "Rodrigues",
    "Martins",
    "Jesus",
    "Sousa",
    "Fernandes",
    "Goncalves",
    "Gomes",
    "Lopes",
    "Marques",
    "Alves",
    "Almeida",
    "Ribeiro",
    "Pinto",
    "Carvalho",
    "Teixeira",
    "Moreira",
    "Correia",
    "Mendes",
    "Nunes",
    "Soares",
    "Vieira",
    "Monteiro",
    "Cardoso",
    "Rocha",
    "Raposo",
    "Neves",
    "Coelho",
    "Cruz",
    "Cunha",
    "Pires",
]
PET_NAMES = [
    "Bobby",
    "Luna",
    "Max",
    "Bella",
    "Rocky",
    "Mia",
    "Simba",
    "Nala",
    "Toby",
    "Kika",
    "Oscar",
    "Lola",
    "Thor",
    "Pipoca",
    "Tareco",
    "Farrusco",
    "Bolinha",
    "Jack",
    "Daisy",
    "Charlie",
    "Milo",
    "Zeca",
    "Tobias",
    "Nina",
    "Faisca",
    "Pantufa",
    "Shadow",
    "Coco",
    "Ruby",
    "Leo",
]


@dataclass(frozen=True)
class Built:
    size: str
    seconds: float
    rows: dict[str, int]
    clinic_id: str
    """The biggest clinic: the one to query as."""
    owner_id: str
    """Its owner (password fixtures.factories.DEFAULT_PASSWORD)."""
    owner_email: str


def staff_email(k: int, g: int) -> str:
    """Clinic ``k``'s member ``g``'s address (0 the owner), as the users' statement makes it."""
    return f"staff{g}.clinic{k}@bigdata.example.org"


def clinic_id(k: int) -> uuid.UUID:
    return row_id("clinic", k)


def row_id(kind: str, *parts: int) -> uuid.UUID:
    """The id :func:`_ident` computes in SQL, for finding a known row."""
    name = ":".join([kind, *map(str, parts)]).encode()
    return uuid.UUID(hashlib.md5(name, usedforsecurity=False).hexdigest())


def plan(size: Size) -> list[tuple[int, uuid.UUID, int, int, int, int, int, int]]:
    """Per clinic: (k, id, customers, pets, appointments, records, vets, rooms)."""
    weights = [k**-SKEW for k in range(1, size.clinics + 1)]
    total = sum(weights)
    rows = []
    for k, weight in enumerate(weights, start=1):
        share = weight / total

        def count(n: int, share: float = share) -> int:
            return max(1, round(n * share))

        appointments = count(size.appointments)
        vets = max(1, math.ceil(appointments / APPOINTMENTS_PER_VET))
        rows.append(
            (
                k,
                clinic_id(k),
                count(size.customers),
                count(size.pets),
                appointments,
                min(count(size.records), appointments),
                vets,
                max(1, vets // 2),
            )
        )
    return rows


def _ident(kind: str, *parts: str) -> str:
    """SQL for the id of row (kind, parts...): md5 of ``kind:part:part`` as a uuid."""
    return f"md5(concat_ws(':', '{kind}', {', '.join(parts)}))::uuid"


def _pick(words: tuple[str, ...] | list[str], index: str) -> str:
    """SQL choosing a word of ``words`` by the integer ``index``."""
    array = "ARRAY[" + ", ".join(f"'{word}'" for word in words) + "]"
    return f"({array})[1 + ({index}) % {len(words)}]"


# The statements: text built from this module's constants only.
_PET_OF_APPOINTMENT = "1 + ((g - 1)::bigint * 7919) % p.pets"
_VET = "(g - 1) % p.vets"
_STARTS = (
    f"(current_date - {PAST_DAYS})::timestamptz"
    f" + make_interval(days => (((g - 1) / p.vets) * p.stride) / {SLOTS_PER_DAY},"
    f" mins => 480 + 30 * ((((g - 1) / p.vets) * p.stride) % {SLOTS_PER_DAY}))"
)
_STATEMENTS: list[tuple[str, str]] = [
    (
        "clinics",
        "INSERT INTO clinics (id, name, timezone, require_mfa, auth_epoch)"
        " SELECT id, 'Clinic ' || k, 'Europe/Lisbon', false, 0 FROM bigdata_plan",
    ),
    (
        "billing_accounts",
        "INSERT INTO billing_accounts (id, tenant_id, status, trial_ends_at, cancel_at_period_end)"
        f" SELECT {_ident('billing', 'k')}, id, 'trialing', now() + interval '14 days', false"
        " FROM bigdata_plan",
    ),
    (
        "locations",
        "INSERT INTO locations (id, tenant_id, name, city, country)"
        f" SELECT {_ident('location', 'k')}, id, 'Main', 'Lisboa', 'PT' FROM bigdata_plan",
    ),
    (
        "rooms",
        "INSERT INTO rooms (id, tenant_id, location_id, name, active)"
        f" SELECT {_ident('room', 'p.k', 'g')}, p.id, {_ident('location', 'p.k')},"
        " 'Exam room ' || (g + 1), true"
        " FROM bigdata_plan p, generate_series(0, p.rooms - 1) g",
    ),
    (
        "appointment_types",
        "INSERT INTO appointment_types (id, tenant_id, name, default_duration_minutes)"
        f" SELECT {_ident('type', 'p.k', 'g')}, p.id,"
        " (ARRAY['Consultation', 'Vaccination', 'Dental', 'Follow-up'])[g + 1],"
        " (ARRAY[20, 15, 45, 15])[g + 1]"
        " FROM bigdata_plan p, generate_series(0, 3) g",
    ),
    # Staff: 0 the owner, 1..vets the vets, vets + 1 the receptionist.
    (
        "users",
        "INSERT INTO users (id, email, name, password_hash, active, email_verified_at)"
        f" SELECT {_ident('user', 'p.k', 'g')}, 'staff' || g || '.clinic' || p.k"
        f" || '@bigdata.example.org', 'Staff ' || g || ' of clinic ' || p.k, $1, true, now()"
        " FROM bigdata_plan p, generate_series(0, p.vets + 1) g",
    ),
    (
        "memberships",
        "INSERT INTO memberships (id, tenant_id, user_id, role, active)"
        f" SELECT {_ident('membership', 'p.k', 'g')}, p.id, {_ident('user', 'p.k', 'g')},"
        " (CASE WHEN g = 0 THEN 'owner' WHEN g <= p.vets THEN 'vet' ELSE 'receptionist' END)"
        "::staff_role, true"
        " FROM bigdata_plan p, generate_series(0, p.vets + 1) g",
    ),
    (
        "customers",
        # Their contact details are sealed afterwards, in Python (_seal_contacts).
        "INSERT INTO customers (id, tenant_id, first_name, last_name, preferred_language,"
        " created_at, updated_at)"
        " SELECT id, tenant_id, first, last, 'en', at, at"
        " FROM (SELECT p.k, g, p.id AS tenant_id,"
        f" {_ident('customer', 'p.k', 'g')} AS id,"
        f" {_pick(FIRST_NAMES, 'g * 13 + p.k')} AS first,"
        f" {_pick(LAST_NAMES, 'g * 7 + p.k')} AS last,"
        f" now() - make_interval(days => {SPAN_DAYS}) * g / p.customers AS at"
        " FROM bigdata_plan p, generate_series(1, p.customers) g) c ORDER BY at DESC",
    ),
    (
        "consent_events",
        "INSERT INTO consent_events (id, tenant_id, customer_id, channel, granted, recorded_at)"
        f" SELECT {_ident('consent', 'p.k', 'g')}, p.id, {_ident('customer', 'p.k', 'g')},"
        " 'email', g % 4 <> 0, now()"
        " FROM bigdata_plan p, generate_series(1, p.customers) g WHERE g % 2 = 0",
    ),
    (
        "pets",
        "INSERT INTO pets (id, tenant_id, customer_id, name, species, breed, sex, neutered,"
        " date_of_birth, microchip, alerts_sealed, deceased)"
        f" SELECT {_ident('pet', 'p.k', 'g')}, p.id,"
        f" {_ident('customer', 'p.k', '1 + (g - 1) % p.customers')},"
        f" {_pick(PET_NAMES, 'g * 11 + p.k')},"
        " (ARRAY['dog', 'dog', 'dog', 'dog', 'dog', 'cat', 'cat', 'cat', 'rabbit', 'other'])"
        "[1 + g % 10]::species,"
        " (ARRAY['Labrador Retriever', 'Border Collie', 'French Bulldog', 'Beagle', 'Mixed',"
        " 'European Shorthair', 'Maine Coon', 'Siamese', 'Holland Lop', NULL])[1 + g % 10],"
        " (ARRAY['male', 'female'])[1 + g % 2]::pet_sex, g % 3 = 0,"
        " current_date - (90 + g % 5000),"
        " CASE WHEN g % 5 <> 0 THEN '941' || lpad(p.k::text, 4, '0') || lpad(g::text, 8, '0')"
        " END, NULL, g % 25 = 0"
        " FROM bigdata_plan p, generate_series(1, p.pets) g ORDER BY md5(p.k || ':' || g)",
    ),
    (
        "pet_weights",
        "INSERT INTO pet_weights (id, tenant_id, pet_id, weight_kg, measured_at)"
        f" SELECT {_ident('weight', 'p.k', 'g')}, p.id, {_ident('pet', 'p.k', 'g')},"
        " 2 + (g % 38000) / 1000.0, now() - make_interval(days => g % 365)"
        " FROM bigdata_plan p, generate_series(1, p.pets) g WHERE g % 3 = 0",
    ),
    (
        "appointments",
        "INSERT INTO appointments (id, tenant_id, pet_id, vet_id, room_id, appointment_type_id,"
        " starts_at, ends_at, status, reason)"
        " SELECT id, tenant_id, pet_id, vet_id, room_id, type_id, starts_at,"
        " starts_at + interval '20 minutes',"
        " (CASE WHEN starts_at > now() THEN (ARRAY['scheduled', 'confirmed'])[1 + g % 2]"
        " WHEN g % 20 = 0 THEN 'cancelled' WHEN g % 20 = 1 THEN 'no_show'"
        " ELSE 'completed' END)::appointment_status,"
        " (ARRAY['Annual check-up', 'Vaccination', 'Limping', 'Dental cleaning'])[1 + g % 4]"
        " FROM (SELECT g, p.id AS tenant_id,"
        f" {_ident('appointment', 'p.k', 'g')} AS id,"
        f" {_ident('pet', 'p.k', _PET_OF_APPOINTMENT)} AS pet_id,"
        f" {_ident('user', 'p.k', f'1 + {_VET}')} AS vet_id,"
        f" CASE WHEN {_VET} < p.rooms THEN {_ident('room', 'p.k', _VET)} END AS room_id,"
        f" {_ident('type', 'p.k', 'g % 4')} AS type_id, {_STARTS} AS starts_at"
        " FROM bigdata_plan p, generate_series(1, p.appointments) g) a ORDER BY starts_at",
    ),
    # Record g is the visit of appointment g (the first half of a clinic's: all in the past).
    (
        "medical_records",
        # Their SOAP notes are sealed afterwards, in Python (_seal_notes).
        "INSERT INTO medical_records (id, tenant_id, pet_id, appointment_id, author_id,"
        " visited_at, weight_kg, temperature_c, heart_rate_bpm, signed_by, signed_at, locks_at)"
        " SELECT id, tenant_id, pet_id, appointment_id, vet_id, visited_at,"
        " 2 + (g % 38000) / 1000.0, 38.5, 60 + g % 80, vet_id,"
        " visited_at + interval '1 hour', visited_at + interval '25 hours'"
        " FROM (SELECT g, p.id AS tenant_id,"
        f" {_ident('record', 'p.k', 'g')} AS id,"
        f" {_ident('pet', 'p.k', _PET_OF_APPOINTMENT)} AS pet_id,"
        f" {_ident('appointment', 'p.k', 'g')} AS appointment_id,"
        f" {_ident('user', 'p.k', f'1 + {_VET}')} AS vet_id, {_STARTS} AS visited_at"
        " FROM bigdata_plan p, generate_series(1, p.records) g) r ORDER BY visited_at",
    ),
    (
        "vaccinations",
        "INSERT INTO vaccinations (id, tenant_id, record_id, vaccine, lot, given_at, next_due)"
        f" SELECT {_ident('vaccination', 'p.k', 'g')}, p.id, {_ident('record', 'p.k', 'g')},"
        " 'Rabies', 'LOT' || g, now() - make_interval(days => g % 365), current_date + 30"
        " FROM bigdata_plan p, generate_series(1, p.records) g WHERE g % 4 = 0",
    ),
    (
        "prescriptions",
        "INSERT INTO prescriptions (id, tenant_id, record_id, drug, dose, frequency,"
        " duration_days)"
        f" SELECT {_ident('prescription', 'p.k', 'g')}, p.id, {_ident('record', 'p.k', 'g')},"
        " 'Meloxicam', '0.1 mg/kg', 'once daily', 5"
        " FROM bigdata_plan p, generate_series(1, p.records) g WHERE g % 6 = 0",
    ),
    # The audit trail: each appointment's booking by its vet, a week before it, numbered in
    # that order per clinic (so time and seq rise together, as the service writes them). The
    # hashes are zeros: a trail to read at size, not one `vetify audit verify` would pass.
    (
        "audit_events",
        "INSERT INTO audit_events (id, tenant_id, seq, user_id, role, action, object_type,"
        " object_id, change, fields, created_at, prev_hash, hash)"
        " SELECT md5('audit:' || id)::uuid, tenant_id,"
        " row_number() OVER (PARTITION BY tenant_id ORDER BY starts_at, id), vet_id, 'vet',"
        " 'appointments:write', 'appointments', id, 'insert',"
        " '{ends_at,pet_id,reason,starts_at,status,vet_id}', starts_at - interval '7 days',"
        " decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex')"
        " FROM appointments ORDER BY starts_at",
    ),
    (
        "audit_heads",
        "INSERT INTO audit_heads (id, tenant_id, seq, hash)"
        " SELECT md5('audit-head:' || tenant_id)::uuid, tenant_id, max(seq),"
        " decode(repeat('00', 32), 'hex') FROM audit_events GROUP BY tenant_id",
    ),
]
LOADED = [table for table, _ in _STATEMENTS]
LOCK_TRIGGERS = {
    "medical_records": "medical_records_locked",  # their notes are sealed once they are in
    "vaccinations": "vaccinations_record_locked",
    "prescriptions": "prescriptions_record_locked",
}


async def build(
    url: str, size_name: str, *, log: bool = False, wrapper: KeyWrapper | None = None
) -> Built:
    """Fill the migrated, empty database at ``url`` (the owner's) with ``size_name``'s rows;
    clients' contact details sealed with data keys ``wrapper`` wraps (the settings' keys, as
    the server measured against it has them, by default)."""
    size = SIZES[size_name]
    started = time.monotonic()
    connection = await asyncpg.connect(plain_url(url))
    rows: dict[str, int] = {}
    try:
        async with connection.transaction():
            await connection.execute(
                "CREATE TEMPORARY TABLE bigdata_plan (k int, id uuid, customers int, pets int,"
                " appointments int, records int, vets int, rooms int, stride int)"
                " ON COMMIT DROP"
            )
            clinics = plan(size)
            await connection.copy_records_to_table(
                "bigdata_plan",
                records=[(*row, _stride(row[4], row[6])) for row in clinics],
                columns=[
                    "k",
                    "id",
                    "customers",
                    "pets",
                    "appointments",
                    "records",
                    "vets",
                    "rooms",
                    "stride",
                ],
            )
            for table in LOADED:
                await connection.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            for table, trigger in LOCK_TRIGGERS.items():
                await connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
            for table, statement in _STATEMENTS:
                at = time.monotonic()
                arguments = (DEFAULT_PASSWORD_HASH,) if "$1" in statement else ()
                status = await connection.execute(statement, *arguments)
                rows[table] = int(status.rsplit(" ", 1)[1])
                if log:
                    print(f"{table}: {rows[table]:,} rows, {time.monotonic() - at:.1f} s")
            at = time.monotonic()
            clinic_keys = await _clinic_keys(connection, wrapper or keys.wrapper_from(Settings()))
            await _seal_contacts(connection, clinic_keys)
            await _seal_notes(connection, clinic_keys)
            if log:
                print(f"contact details and notes sealed: {time.monotonic() - at:.1f} s")
            for table, trigger in LOCK_TRIGGERS.items():
                await connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")
            for table in LOADED:
                await connection.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        at = time.monotonic()
        # FULL where sealing rewrote every row: compacted again, in the same order.
        await connection.execute("VACUUM (FULL) customers, medical_records")
        await connection.execute(f"VACUUM (ANALYZE) {', '.join(LOADED)}")
        if log:
            print(f"VACUUM ANALYZE: {time.monotonic() - at:.1f} s")
    finally:
        await connection.close()
    return Built(
        size=size_name,
        seconds=round(time.monotonic() - started, 1),
        rows=rows,
        clinic_id=str(clinic_id(1)),
        owner_id=str(row_id("user", 1, 0)),
        owner_email=staff_email(1, 0),
    )


ClinicKeys = dict[uuid.UUID, tuple[bytes, bytes]]
"""Per clinic: its first data key and its index key."""


async def _clinic_keys(connection: asyncpg.Connection, wrapper: KeyWrapper) -> ClinicKeys:
    """Each clinic's first data key and its index key, made and stored (the index key sealed
    in its clinic's row, as app/keys/blind.py keeps it)."""
    made: ClinicKeys = {}
    for clinic in await connection.fetchval("SELECT array_agg(id ORDER BY id) FROM clinics"):
        scope = str(clinic)
        key = sealing.new_data_key()
        kek_id, wrapped = wrapper.wrap(key, sealing.key_context(scope, 1))
        await connection.execute(
            "INSERT INTO data_keys (scope, version, kek_id, wrapped) VALUES ($1, 1, $2, $3)",
            scope,
            kek_id,
            wrapped,
        )
        index_key = secrets.token_bytes(32)
        await connection.execute(
            "UPDATE clinics SET index_key_sealed = $1 WHERE id = $2",
            sealing.seal(key, 1, index_key, sealing.field_aad(scope, blind.INDEX_KEY, clinic)),
            clinic,
        )
        made[clinic] = (key, index_key)
    return made


async def _seal_contacts(connection: asyncpg.Connection, clinic_keys: ClinicKeys) -> None:
    """Every customer's contact details, sealed and indexed as the service keeps them
    (ADR 0032): SQL cannot seal, so they are made here, copied in, and set by one UPDATE."""
    rows = await connection.fetch("SELECT id, tenant_id, first_name, last_name FROM customers")
    sealed = []
    for n, row in enumerate(rows):
        key, index_key = clinic_keys[row["tenant_id"]]
        email = f"{row['first_name']}.{row['last_name']}.{n}@example.org".lower()
        phone = f"+3519{n % 10**8:08d}"
        contact = Contact(
            email=email,
            phone=phone,
            address_line1=f"Rua {row['last_name']} {n}",
            city="Lisboa",
            postcode=f"1000-{n % 1000:03d}",
            country="PT",
        )
        plain = contact.model_dump_json(exclude_none=True).encode()
        aad = sealing.field_aad(str(row["tenant_id"]), customers.CONTACT, row["id"])
        sealed.append(
            (
                row["id"],
                sealing.seal(key, 1, plain, aad),
                blind.index_of(index_key, customers.EMAIL, email),
                blind.index_of(index_key, customers.PHONE, phone),
            )
        )
    await _set_from(
        connection, "customers", sealed, ("contact_sealed", "email_index", "phone_index")
    )


NOTES = Notes(
    subjective="Owner reports reduced appetite for two days.",
    objective="Alert, hydrated, mild tartar.",
    assessment="Healthy; early dental disease.",
    plan="Dental cleaning in 3 months.",
).model_dump_json(exclude_defaults=True)


async def _seal_notes(connection: asyncpg.Connection, clinic_keys: ClinicKeys) -> None:
    """Every record's SOAP notes, sealed as the service keeps them (ADR 0033)."""
    rows = await connection.fetch("SELECT id, tenant_id FROM medical_records")
    sealed = [
        (
            row["id"],
            sealing.seal(
                clinic_keys[row["tenant_id"]][0],
                1,
                NOTES.encode(),
                sealing.field_aad(str(row["tenant_id"]), records.NOTES, row["id"]),
            ),
        )
        for row in rows
    ]
    await _set_from(connection, "medical_records", sealed, ("notes_sealed",))


async def _set_from(
    connection: asyncpg.Connection,
    table: str,
    rows: list[tuple[object, ...]],
    columns: tuple[str, ...],
) -> None:
    """``columns`` of ``table`` set from ``rows`` (id first, then the columns' bytes): copied
    into a temporary table, then one UPDATE."""
    await connection.execute(
        f"CREATE TEMPORARY TABLE bigdata_sealed_{table} (id uuid,"
        + ", ".join(f"{c} bytea" for c in columns)
        + ") ON COMMIT DROP"
    )
    await connection.copy_records_to_table(f"bigdata_sealed_{table}", records=rows)
    await connection.execute(
        f"UPDATE {table} t SET "
        + ", ".join(f"{c} = s.{c}" for c in columns)
        + f" FROM bigdata_sealed_{table} s WHERE t.id = s.id"
    )


def _stride(appointments: int, vets: int) -> int:
    """Slots between one vet's appointments, to spread a clinic's over the whole span."""
    per_vet = math.ceil(appointments / vets)
    return max(1, SPAN_DAYS * SLOTS_PER_DAY // per_vet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--url", required=True, help="the owner's URL of a migrated database")
    arguments = parser.parse_args()
    built = asyncio.run(build(arguments.url, arguments.size, log=True))
    print(json.dumps(asdict(built), indent=2))


if __name__ == "__main__":
    main()
