"""attachments: files on medical records

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("uploaded_by", sa.Uuid(), nullable=False),
        sa.Column("storage_key", sa.String(length=100), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "scan_status",
            sa.Enum("unscanned", "pending", "clean", "infected", name="scan_status"),
            nullable=False,
        ),
        sa.Column("scan_signature", sa.String(length=200), nullable=True),
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
        sa.ForeignKeyConstraint(
            ["tenant_id", "record_id"],
            ["medical_records.tenant_id", "medical_records.id"],
            name=op.f("fk_attachments_tenant_id_record_id_medical_records"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_attachments_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["users.id"], name=op.f("fk_attachments_uploaded_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_attachments_storage_key")),
    )
    op.create_index(op.f("ix_attachments_record_id"), "attachments", ["record_id"], unique=False)
    op.create_index(op.f("ix_attachments_tenant_id"), "attachments", ["tenant_id"], unique=False)
    rls.enable_tenant_rls("attachments")
    # What was uploaded never changes (key, checksum, name, type): only the scan's verdict does.
    rls.grant("attachments", "SELECT, INSERT, DELETE")
    rls.grant("attachments", "UPDATE (scan_status, scan_signature, updated_at)")
    # Adding a file to a locked record is allowed (like an addendum); taking one away is not.
    op.execute(
        "CREATE TRIGGER attachments_record_locked BEFORE DELETE ON attachments "
        "FOR EACH ROW EXECUTE FUNCTION reject_change_to_locked_record_part()"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_attachments_tenant_id"), table_name="attachments")
    op.drop_index(op.f("ix_attachments_record_id"), table_name="attachments")
    op.drop_table("attachments")
    op.execute("DROP TYPE scan_status")
