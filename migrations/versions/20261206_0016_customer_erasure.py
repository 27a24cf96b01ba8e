"""customer erasure: a client's personal fields can be erased, unless a legal hold forbids it

``customers`` gains ``erased_at`` (when the client's personal fields were erased: names,
contact details and address overwritten, consent withdrawn; ``POST
/api/v1/customers/{id}/erase``) and ``legal_hold`` (why the clinic must keep them for now: a
claim, a dispute, an authority's request; while set, erasure is refused saying so). ADR 0029.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("customers", sa.Column("legal_hold", sa.String(length=500), nullable=True))


def downgrade() -> None:
    op.drop_column("customers", "legal_hold")
    op.drop_column("customers", "erased_at")
