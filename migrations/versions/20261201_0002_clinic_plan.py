"""clinic plan: which entitlements (quotas) a clinic has

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLAN = sa.Enum("starter", "professional", "enterprise", name="clinic_plan")


def upgrade() -> None:
    PLAN.create(op.get_bind())
    op.add_column("clinics", sa.Column("plan", PLAN, server_default="starter", nullable=False))


def downgrade() -> None:
    op.drop_column("clinics", "plan")
    PLAN.drop(op.get_bind())
