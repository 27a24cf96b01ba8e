"""clinical free text sealed: a record's SOAP notes and each addendum's text (ADR 0033)

``medical_records.subjective``, ``objective``, ``assessment`` and ``plan`` move into
``notes_sealed`` (one JSON object of the non-empty ones, sealed with the clinic's data key and
bound to the clinic, ``medical_records.notes`` and the row; null when all four are empty);
``record_addenda.text`` into ``text_sealed`` (bound to ``record_addenda.text``). Existing rows
are sealed on the way up and opened on the way down, a batch at a time, in the migration's one
transaction, with the keys ``vetify migrate`` passes.

A locked record cannot change "whoever asks" (0001's trigger). It now makes one exception: the
table's owner may replace ``notes_sealed`` and nothing else, which is what sealing the notes
again under a new data key is (`vetify keys rotate-dek`, and this migration). The owner could
always turn the trigger off; the service's role still cannot change a locked record at all.
The downgrade writes the plain columns back with the trigger off for its transaction.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 03:00:00
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.migrate import (
    migration_keys,
    newest_data_key,
    rls_released,
    rows_in_batches,
    unwrapped_data_key,
)
from app.kit import sealing

DESTRUCTIVE = (
    "the notes and addenda are sealed first, in the same transaction; clear clinical text "
    "must not outlive the release that seals it (ADR 0033); the downgrade opens it again"
)
revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app/records/service.py names them when this was written.
NOTES, ADDENDUM = "medical_records.notes", "record_addenda.text"
SOAP = ("subjective", "objective", "assessment", "plan")
WHAT = "medical records' notes and addenda"

RECORDS = sa.table(
    "medical_records",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    *(sa.column(name, sa.Text()) for name in SOAP),
    sa.column("notes_sealed", sa.LargeBinary()),
)
ADDENDA = sa.table(
    "record_addenda",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("text", sa.Text()),
    sa.column("text_sealed", sa.LargeBinary()),
)

LOCKED_RECORD = """
CREATE OR REPLACE FUNCTION reject_locked_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The notes sealed again under a new data key (the same text; rotate-dek), by the owner.
    IF TG_OP = 'UPDATE'
        AND current_user = (
            SELECT tableowner FROM pg_tables
            WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME
        )
        AND to_jsonb(OLD) - 'notes_sealed' = to_jsonb(NEW) - 'notes_sealed'
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'medical record % is locked', OLD.id
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$
"""
LOCKED_RECORD_BEFORE = """
CREATE OR REPLACE FUNCTION reject_locked_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'medical record % is locked', OLD.id
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$
"""


def upgrade() -> None:
    op.execute(LOCKED_RECORD)
    op.add_column("medical_records", sa.Column("notes_sealed", sa.LargeBinary(), nullable=True))
    op.add_column("record_addenda", sa.Column("text_sealed", sa.LargeBinary(), nullable=True))
    written = sa.or_(*(RECORDS.c[name] != "" for name in SOAP))
    keys: dict[uuid.UUID, tuple[int, bytes]] = {}

    def sealed(tenant_id: uuid.UUID, what: str, row_id: uuid.UUID, plain: bytes) -> bytes:
        if tenant_id not in keys:
            keys[tenant_id] = newest_data_key(op.get_bind(), migration_keys(WHAT), str(tenant_id))
        version, key = keys[tenant_id]
        return sealing.seal(key, version, plain, sealing.field_aad(str(tenant_id), what, row_id))

    with rls_released("medical_records", "record_addenda"):
        for row in rows_in_batches(RECORDS, ("tenant_id", *SOAP), written):
            notes = {name: getattr(row, name) for name in SOAP if getattr(row, name)}
            plain = json.dumps(notes, separators=(",", ":"), ensure_ascii=False).encode()
            op.get_bind().execute(
                sa.update(RECORDS)
                .where(RECORDS.c.id == row.id)
                .values(notes_sealed=sealed(row.tenant_id, NOTES, row.id, plain))
            )
        for row in rows_in_batches(ADDENDA, ("tenant_id", "text"), sa.true()):
            op.get_bind().execute(
                sa.update(ADDENDA)
                .where(ADDENDA.c.id == row.id)
                .values(text_sealed=sealed(row.tenant_id, ADDENDUM, row.id, row.text.encode()))
            )
    op.alter_column("record_addenda", "text_sealed", nullable=False)
    op.drop_column("record_addenda", "text")
    for name in SOAP:
        op.drop_column("medical_records", name)


def downgrade() -> None:
    for name in SOAP:
        op.add_column(
            "medical_records",
            sa.Column(name, sa.Text(), server_default="", nullable=False),
        )
        op.alter_column("medical_records", name, server_default=None)
    op.add_column("record_addenda", sa.Column("text", sa.Text(), nullable=True))
    keys: dict[tuple[str, int], bytes] = {}

    def opened(tenant_id: uuid.UUID, what: str, row_id: uuid.UUID, sealed: bytes) -> bytes:
        scope, version = str(tenant_id), sealing.version_of(sealed)
        if (scope, version) not in keys:
            keys[scope, version] = unwrapped_data_key(
                op.get_bind(), migration_keys(WHAT), scope, version
            )
        return sealing.unseal(keys[scope, version], sealed, sealing.field_aad(scope, what, row_id))

    op.execute("ALTER TABLE medical_records DISABLE TRIGGER medical_records_locked")
    with rls_released("medical_records", "record_addenda"):
        for row in rows_in_batches(
            RECORDS, ("tenant_id", "notes_sealed"), RECORDS.c.notes_sealed.is_not(None)
        ):
            notes = json.loads(opened(row.tenant_id, NOTES, row.id, row.notes_sealed))
            op.get_bind().execute(
                sa.update(RECORDS)
                .where(RECORDS.c.id == row.id)
                .values({name: notes.get(name, "") for name in SOAP})
            )
        for row in rows_in_batches(ADDENDA, ("tenant_id", "text_sealed"), sa.true()):
            text = opened(row.tenant_id, ADDENDUM, row.id, row.text_sealed).decode()
            op.get_bind().execute(
                sa.update(ADDENDA).where(ADDENDA.c.id == row.id).values(text=text)
            )
    op.execute("ALTER TABLE medical_records ENABLE TRIGGER medical_records_locked")
    op.alter_column("record_addenda", "text", nullable=False)
    op.drop_column("record_addenda", "text_sealed")
    op.drop_column("medical_records", "notes_sealed")
    op.execute(LOCKED_RECORD_BEFORE)
