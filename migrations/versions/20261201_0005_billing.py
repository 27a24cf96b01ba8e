"""billing: each clinic's billing account, the Stripe event inbox, and the job queue's schema

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.util import await_only

from app.db import rls

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# procrastinate's own schema, as released with the version pyproject.toml pins (ADR 0012);
# a newer procrastinate brings its migration scripts, applied by a migration of ours.
PROCRASTINATE_SCHEMA = Path(__file__).parent.parent / "sql" / "procrastinate-3.10.0.sql"
PROCRASTINATE_TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
)
STATUSES = (
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "paused",
    "incomplete",
    "incomplete_expired",
)
EVENT_STATUSES = ("pending", "processed", "ignored", "retrying", "failed")


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("status", postgresql.ENUM(*STATUSES, name="subscription_status"), nullable=False),
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("subscription_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False),
        sa.Column("past_due_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trial_will_end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
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
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_billing_accounts_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_accounts")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_billing_accounts_tenant_id")),
        sa.UniqueConstraint(
            "stripe_customer_id", name=op.f("uq_billing_accounts_stripe_customer_id")
        ),
    )
    op.create_index(
        op.f("ix_billing_accounts_tenant_id"), "billing_accounts", ["tenant_id"], unique=False
    )
    rls.enable_tenant_rls("billing_accounts")
    # Made at signup, changed by webhooks; a clinic's billing history is never deleted by it.
    rls.grant("billing_accounts", "SELECT, INSERT, UPDATE")
    # Clinics that existed before billing start their trial now.
    op.execute(
        "INSERT INTO billing_accounts (id, tenant_id, status, trial_ends_at, cancel_at_period_end)"
        " SELECT gen_random_uuid(), id, 'trialing', now() + interval '14 days', false"
        " FROM clinics"
    )

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=255), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "status", postgresql.ENUM(*EVENT_STATUSES, name="stripe_event_status"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("clinic_id", sa.Uuid(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(op.f("ix_stripe_events_status"), "stripe_events", ["status"], unique=False)
    op.create_index(op.f("ix_stripe_events_type"), "stripe_events", ["type"], unique=False)
    # Global (Stripe's events name their clinic only inside the payload); only billing reads it.
    rls.grant("stripe_events", "SELECT, INSERT, UPDATE")

    _procrastinate()


def _procrastinate() -> None:
    # Several statements and $$-quoted functions: sent as one simple query by the driver.
    driver = op.get_bind().connection.driver_connection
    await_only(driver.execute(PROCRASTINATE_SCHEMA.read_text(encoding="utf-8")))  # type: ignore[union-attr]
    for table in PROCRASTINATE_TABLES:
        rls.grant(table)
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {rls.app_role()}")


def downgrade() -> None:
    for table in PROCRASTINATE_TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    functions = _procrastinate_functions()
    if functions:
        op.execute(f"DROP FUNCTION {', '.join(functions)} CASCADE")
    for type_name in (
        "procrastinate_job_to_defer_v1",
        "procrastinate_job_event_type",
        "procrastinate_job_status",
    ):
        op.execute(f"DROP TYPE IF EXISTS {type_name} CASCADE")
    op.drop_index(op.f("ix_stripe_events_type"), table_name="stripe_events")
    op.drop_index(op.f("ix_stripe_events_status"), table_name="stripe_events")
    op.drop_table("stripe_events")
    op.drop_index(op.f("ix_billing_accounts_tenant_id"), table_name="billing_accounts")
    op.drop_table("billing_accounts")
    op.execute("DROP TYPE stripe_event_status")
    op.execute("DROP TYPE subscription_status")


def _procrastinate_functions() -> list[str]:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate%'"
        )
    )
    return [row[0] for row in rows]
