"""clinic usage: requests and job runs per clinic per UTC day, for operators (ADR 0026)

Each process adds what it counted in memory every ``VETIFY_USAGE_FLUSH_SECONDS``
(``INSERT ... ON CONFLICT (clinic_id, day) DO UPDATE SET requests = clinic_usage.requests +
excluded.requests``). Global, like ``stripe_events``: counts and ids, no clinic data; one flush
writes many clinics' rows in one statement, which a tenant policy would split into a
transaction per clinic. The service role may add to it (``SELECT`` is what ``ON CONFLICT ...
SET requests = clinic_usage.requests + ...`` reads), never delete; no route reads it; `vetify
usage` reads it as the backup role. No foreign key to ``clinics``: what a clinic cost outlives
it, and a flush must not fail because a clinic was deleted since its requests.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clinic_usage",
        sa.Column("clinic_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("requests", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("jobs", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("clinic_id", "day", name=op.f("pk_clinic_usage")),
    )
    rls.grant("clinic_usage", "SELECT, INSERT, UPDATE")


def downgrade() -> None:
    op.drop_table("clinic_usage")
