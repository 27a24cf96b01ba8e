"""audit trail: each clinic's events in a hash chain, and its head (ADR 0027)

``audit_events`` is append-only for everyone but the table's owner: the service role may insert
and read its clinic's rows (row-level security, as every tenant table), and a trigger refuses
UPDATE, DELETE and TRUNCATE to every role, the owner included, so that changing the past takes
dropping the trigger first (which the chain then shows). ``audit_heads`` holds each clinic's last
link; appending locks it. Neither refers to ``clinics``: a clinic's trail outlives its data.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("credential_id", sa.Uuid(), nullable=True),
        sa.Column("role", sa.String(length=40), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("object_type", sa.String(length=100), nullable=False),
        sa.Column("object_id", sa.Uuid(), nullable=True),
        sa.Column("change", sa.String(length=20), nullable=False),
        sa.Column("fields", sa.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("tenant_id", "seq", name=op.f("uq_audit_events_tenant_id_seq")),
    )
    op.create_table(
        "audit_heads",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_heads")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_audit_heads_tenant_id")),
    )
    # What a page of the trail is read by (ADR 0027): one object's history, one member's
    # actions, and where a time range starts (times and ``seq`` rise together).
    for name, columns in (
        ("object", ["tenant_id", "object_id", "seq"]),
        ("user", ["tenant_id", "user_id", "seq"]),
        ("time", ["tenant_id", "created_at", "seq"]),
    ):
        op.create_index(f"ix_audit_events_{name}", "audit_events", columns)
    for table in ("audit_events", "audit_heads"):
        rls.enable_tenant_rls(table)
    rls.grant("audit_events", "SELECT, INSERT")
    rls.grant("audit_heads", "SELECT, INSERT")
    rls.grant("audit_heads", "UPDATE (seq, hash)")
    op.execute(
        """
        CREATE FUNCTION audit_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit events are never changed or deleted (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_events_not_truncated BEFORE TRUNCATE ON audit_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
    )


def downgrade() -> None:
    op.drop_table("audit_heads")
    op.drop_table("audit_events")
    op.execute("DROP FUNCTION audit_events_append_only()")
