"""client retention: a clinic's policy for how long an inactive client keeps their identity

``clinics.inactive_client_years``: a client with no activity (no change to them, no visit, no
record, no consent given or withdrawn, no change to their pets) for this many years is erased
by the operator's ``vetify retention --apply`` (ADR 0031); null keeps clients until they are
erased on request. 7 years by default, existing clinics included.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "clinics",
        sa.Column("inactive_client_years", sa.SmallInteger(), server_default="7", nullable=True),
    )
    op.create_check_constraint(
        op.f("ck_clinics_inactive_client_years_range"),
        "clinics",
        "inactive_client_years BETWEEN 1 AND 50",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_clinics_inactive_client_years_range"), "clinics")
    op.drop_column("clinics", "inactive_client_years")
