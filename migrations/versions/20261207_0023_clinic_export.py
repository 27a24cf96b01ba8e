"""clinic export: an export with no client is the whole clinic's (ADR 0036)

``client_exports.customer_id`` may be null: such an export is the archive of the whole clinic,
asked for by its owner (``POST /api/v1/clinics/current/export``) and built, sealed, stored,
downloaded once and expired as a client's is. The downgrade deletes those rows (their files
are deleted by their expiry jobs, which need no row).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

from alembic import op

from app.db.migrate import rls_released

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("client_exports", "customer_id", nullable=True)


def downgrade() -> None:
    with rls_released("client_exports"):  # every clinic's
        op.execute("DELETE FROM client_exports WHERE customer_id IS NULL")
    op.alter_column("client_exports", "customer_id", nullable=False)
