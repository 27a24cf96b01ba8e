"""audit anchors: each clinic's trail head, signed now and then (ADR 0027)

``audit_anchors`` keeps, per clinic, the (seq, hash) of its trail's head as it was when
``vetify audit anchor`` ran, signed with an Ed25519 key the service never holds: a trail cut
short or rewritten after an anchor no longer holds that event, and an anchor cannot be made
without the key. The command reads every clinic's head as the backup role and writes anchors
as the schema's owner; the service role has no privilege on the table. Append-only, like the
events. Its clinic is ``clinic_id``, not ``tenant_id``: operators' data about clinics, like
``clinic_usage``, not a clinic's rows behind row-level security.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_anchors",
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("clinic_id", "seq", name=op.f("pk_audit_anchors")),
    )
    op.execute(
        """
        CREATE FUNCTION audit_anchors_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit anchors are never changed or deleted (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON audit_anchors"
        " FOR EACH ROW EXECUTE FUNCTION audit_anchors_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_anchors_not_truncated BEFORE TRUNCATE ON audit_anchors"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_anchors_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_anchors")
    op.execute("DROP FUNCTION audit_anchors_append_only()")
