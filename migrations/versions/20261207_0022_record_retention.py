"""record retention: where a clinic practises, how long it keeps medical records, and their removal

``clinics.country`` (ISO 3166-1 alpha-2) picks the legal minimum the operator configured for it
(``VETIFY_RECORD_RETENTION_YEARS``); ``clinics.record_retention_years`` keeps records longer
(null: that minimum). ``vetify retention --apply`` removes a patient's records once its last
visit is older than that (ADR 0035).

A locked record, and its vaccinations, prescriptions and files, cannot change or go "whoever
asks" (0001, 0003). They now make one more exception besides 0020's: the tables' owner may
delete them, which is what that removal does, as the owner. The owner could always turn the
triggers off; the service's role still cannot delete a record at all (no grant), nor a locked
record's parts.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BY_OWNER = """current_user = (
            SELECT tableowner FROM pg_tables
            WHERE schemaname = TG_TABLE_SCHEMA AND tablename = TG_TABLE_NAME
        )"""

OWNER_DELETES = f"""
    IF TG_OP = 'DELETE' AND {BY_OWNER} THEN
        RETURN OLD;
    END IF;"""


def _locked_record(owner_deletes: bool) -> str:
    """0020's function, and (``owner_deletes``) the owner's removal let through too."""
    exception = OWNER_DELETES if owner_deletes else ""
    return f"""
CREATE OR REPLACE FUNCTION reject_locked_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{exception}
    -- The notes sealed again under a new data key (the same text; rotate-dek), by the owner.
    IF TG_OP = 'UPDATE' AND {BY_OWNER}
        AND to_jsonb(OLD) - 'notes_sealed' = to_jsonb(NEW) - 'notes_sealed'
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'medical record % is locked', OLD.id
        USING ERRCODE = 'object_not_in_prerequisite_state';
END $$
"""


def _locked_part(owner_deletes: bool) -> str:
    exception = (
        f"""
    IF TG_OP = 'DELETE' AND {BY_OWNER} THEN
        RETURN OLD;
    END IF;"""
        if owner_deletes
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION reject_change_to_locked_record_part() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN{exception}
    IF EXISTS (
        SELECT 1 FROM medical_records
        WHERE id IN (NEW.record_id, OLD.record_id)
          AND locks_at IS NOT NULL AND locks_at <= now()
    ) THEN
        RAISE EXCEPTION 'medical record is locked'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN COALESCE(NEW, OLD);
END $$
"""


def upgrade() -> None:
    op.add_column("clinics", sa.Column("country", sa.String(2), nullable=True))
    op.create_check_constraint(op.f("ck_clinics_country_code"), "clinics", "country ~ '^[A-Z]{2}$'")
    op.add_column("clinics", sa.Column("record_retention_years", sa.SmallInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_clinics_record_retention_years_range"),
        "clinics",
        "record_retention_years BETWEEN 1 AND 100",
    )
    op.execute(_locked_record(owner_deletes=True))
    op.execute(_locked_part(owner_deletes=True))


def downgrade() -> None:
    op.execute(_locked_part(owner_deletes=False))
    op.execute(_locked_record(owner_deletes=False))
    op.drop_constraint(op.f("ck_clinics_record_retention_years_range"), "clinics")
    op.drop_column("clinics", "record_retention_years")
    op.drop_constraint(op.f("ck_clinics_country_code"), "clinics")
    op.drop_column("clinics", "country")
