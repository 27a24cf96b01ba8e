"""plan on the billing account: billing owns what a clinic is entitled to

The clinic's plan moves from ``clinics`` to its ``billing_accounts`` row (one per clinic since
0005), so the clinics domain knows nothing of plans. Each account takes its clinic's plan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

DESTRUCTIVE = (
    "clinics.plan is copied to billing_accounts first, and no released version serves from "
    "both (one release, before launch); the downgrade copies it back"
)
revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLAN = sa.Enum("starter", "professional", "enterprise", name="clinic_plan", create_type=False)


def upgrade() -> None:
    op.add_column(
        "billing_accounts", sa.Column("plan", PLAN, server_default="starter", nullable=False)
    )
    op.execute(
        "UPDATE billing_accounts AS account SET plan = clinic.plan"
        " FROM clinics AS clinic WHERE clinic.id = account.tenant_id"
    )
    op.drop_column("clinics", "plan")


def downgrade() -> None:
    op.add_column("clinics", sa.Column("plan", PLAN, server_default="starter", nullable=False))
    op.execute(
        "UPDATE clinics AS clinic SET plan = account.plan"
        " FROM billing_accounts AS account WHERE account.tenant_id = clinic.id"
    )
    op.drop_column("billing_accounts", "plan")
