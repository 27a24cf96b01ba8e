"""clinic deletion: when a clinic's data was deleted after it left (ADR 0037)

``clinics.deleted_at``: set by ``vetify retention --apply`` once the clinic's data keys, rows
and files are gone. The row stays, its name erased, for the audit trail that references it
(kept for its own retention, pruned by ``vetify audit prune``).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("clinics", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("clinics", "deleted_at")
