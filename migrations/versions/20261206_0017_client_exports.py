"""client exports: a client's data as one archive, built by a job, sealed, downloaded once

``client_exports`` (a clinic's, under row-level security): who asked for which client's archive,
its state (pending, ready, downloaded, expired, failed), when it expires, and where its sealed
file is in storage. The service may read, insert and update it; rows go with their client
(``ON DELETE CASCADE``) or their clinic. ADR 0030.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("pending", "ready", "downloaded", "expired", "failed")


def upgrade() -> None:
    op.create_table(
        "client_exports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Enum(*_STATUSES, name="export_status"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("downloaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("storage_key", sa.String(length=100), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
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
            ["tenant_id", "customer_id"],
            ["customers.tenant_id", "customers.id"],
            name=op.f("fk_client_exports_tenant_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_client_exports_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["users.id"], name=op.f("fk_client_exports_requested_by_users")
        ),
        sa.CheckConstraint(
            "status NOT IN ('ready', 'downloaded') OR storage_key IS NOT NULL",
            name=op.f("ck_client_exports_built_has_file"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_exports")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_client_exports_storage_key")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_client_exports_tenant_id_id")),
    )
    op.create_index(
        op.f("ix_client_exports_customer_id"), "client_exports", ["customer_id"], unique=False
    )
    op.create_index(
        op.f("ix_client_exports_tenant_id"), "client_exports", ["tenant_id"], unique=False
    )
    rls.enable_tenant_rls("client_exports")
    rls.grant("client_exports", "SELECT, INSERT, UPDATE")


def downgrade() -> None:
    op.drop_table("client_exports")
    op.execute("DROP TYPE export_status")
