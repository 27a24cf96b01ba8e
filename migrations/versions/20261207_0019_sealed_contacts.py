"""clients' contact details sealed, found by blind indexes (ADR 0032)

A customer's email, phone and postal address move from seven plain columns into
``customers.contact_sealed``: one JSON object, sealed with the clinic's data key and bound to the
clinic, the field and the row. ``email_index`` and ``phone_index`` hold their blind indexes
(HMAC-SHA256 with the clinic's index key, which ``clinics.index_key_sealed`` holds sealed with
the same data key). Existing rows are sealed on the way up and opened on the way down, a batch
at a time, with the keys ``vetify migrate`` passes from the settings; all of it in the
migration's one transaction, so a run that stops leaves the table as it was and is simply run
again.

Row-level security is forced on the owner too: the two tables are released from it for this
migration's transaction only (the ALTERs hold their tables' locks until it ends, so nothing else sees them
released), and every row is read and written with its own clinic's key.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 02:00:00
"""

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

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
    "the contact columns are sealed into contact_sealed first, in the same transaction; clear"
    " personal data must not outlive the release that seals it (ADR 0032); the downgrade "
    "opens it again"
)
revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app/customers and app/keys/blind.py name and normalise them when this was written.
CONTACT = "customers.contact"
INDEX_KEY = "clinics.index_key"
EMAIL, PHONE = "customers.email", "customers.phone"
FIELDS = ("email", "phone", "address_line1", "address_line2", "city", "postcode", "country")
PLAIN = {
    "email": sa.String(length=254),
    "phone": sa.String(length=16),
    "address_line1": sa.String(length=200),
    "address_line2": sa.String(length=200),
    "city": sa.String(length=100),
    "postcode": sa.String(length=20),
    "country": sa.String(length=2),
}
SEALED = ("contact_sealed", "email_index", "phone_index")
WHAT = "clients' contact details"


CUSTOMERS = sa.table(
    "customers",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    *(sa.column(name, kind) for name, kind in PLAIN.items()),
    *(sa.column(name, sa.LargeBinary()) for name in SEALED),
)
CLINICS = sa.table("clinics", sa.column("id", sa.Uuid()), sa.column("index_key_sealed"))


def upgrade() -> None:
    op.add_column("clinics", sa.Column("index_key_sealed", sa.LargeBinary(), nullable=True))
    for name in SEALED:
        op.add_column("customers", sa.Column(name, sa.LargeBinary(), nullable=True))
    op.create_index("ix_customers_email_index", "customers", ["tenant_id", "email_index"])
    op.create_index("ix_customers_phone_index", "customers", ["tenant_id", "phone_index"])
    given = sa.or_(*(CUSTOMERS.c[f].is_not(None) for f in FIELDS))
    keys: dict[uuid.UUID, tuple[int, bytes]] = {}
    index_keys: dict[uuid.UUID, bytes] = {}
    with rls_released("clinics", "customers"):
        for row in rows_in_batches(CUSTOMERS, ("tenant_id", *FIELDS), given):
            clinic_id, scope = row.tenant_id, str(row.tenant_id)
            if clinic_id not in keys:
                keys[clinic_id] = newest_data_key(op.get_bind(), migration_keys(WHAT), scope)
            version, key = keys[clinic_id]
            contact = {f: getattr(row, f) for f in FIELDS if getattr(row, f) is not None}
            plain = json.dumps(contact, separators=(",", ":"), ensure_ascii=False).encode()
            values: dict[str, Any] = {
                "contact_sealed": sealing.seal(
                    key, version, plain, sealing.field_aad(scope, CONTACT, row.id)
                )
            }
            if row.email is not None or row.phone is not None:
                if clinic_id not in index_keys:
                    index_keys[clinic_id] = _index_key(clinic_id, version, key)
                if row.email is not None:
                    email = row.email.strip().lower()
                    values["email_index"] = _index(index_keys[clinic_id], EMAIL, email)
                if row.phone is not None:
                    values["phone_index"] = _index(index_keys[clinic_id], PHONE, row.phone)
            op.get_bind().execute(
                sa.update(CUSTOMERS).where(CUSTOMERS.c.id == row.id).values(values)
            )
    for name in FIELDS:
        op.drop_column("customers", name)


def downgrade() -> None:
    for name, kind in PLAIN.items():
        op.add_column("customers", sa.Column(name, kind, nullable=True))
    keys: dict[tuple[str, int], bytes] = {}
    sealed = CUSTOMERS.c.contact_sealed.is_not(None)
    with rls_released("customers"):
        for row in rows_in_batches(CUSTOMERS, ("tenant_id", "contact_sealed"), sealed):
            scope, version = str(row.tenant_id), sealing.version_of(row.contact_sealed)
            if (scope, version) not in keys:
                keys[scope, version] = unwrapped_data_key(
                    op.get_bind(), migration_keys(WHAT), scope, version
                )
            aad = sealing.field_aad(scope, CONTACT, row.id)
            contact = json.loads(sealing.unseal(keys[scope, version], row.contact_sealed, aad))
            op.get_bind().execute(
                sa.update(CUSTOMERS)
                .where(CUSTOMERS.c.id == row.id)
                .values({f: contact.get(f) for f in FIELDS})
            )
    op.drop_index("ix_customers_phone_index", "customers")
    op.drop_index("ix_customers_email_index", "customers")
    for name in SEALED:
        op.drop_column("customers", name)
    op.drop_column("clinics", "index_key_sealed")


def _index_key(clinic_id: uuid.UUID, version: int, key: bytes) -> bytes:
    """The clinic's index key, made and stored sealed now (the column is new)."""
    index_key = secrets.token_bytes(32)
    aad = sealing.field_aad(str(clinic_id), INDEX_KEY, clinic_id)
    op.get_bind().execute(
        sa.update(CLINICS)
        .where(CLINICS.c.id == clinic_id)
        .values(index_key_sealed=sealing.seal(key, version, index_key, aad))
    )
    return index_key


def _index(key: bytes, field: str, value: str) -> bytes:
    return hmac.digest(key, field.encode() + b"\0" + value.encode(), hashlib.sha256)
