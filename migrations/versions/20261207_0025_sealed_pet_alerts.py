"""pets' alerts sealed: the last free clinical text in the clear (ADR 0038)

``pets.alerts`` (an array of short texts) moves into ``alerts_sealed``: one JSON list, sealed
with the clinic's data key and bound to the clinic, ``pets.alerts`` and the row; null when a pet
has none. Existing rows are sealed on the way up and opened on the way down, a batch at a time,
in the migration's one transaction, with the keys ``vetify migrate`` passes.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 09:00:00
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db.migrate import FieldKeys, rls_released, rows_in_batches

DESTRUCTIVE = (
    "pets.alerts is sealed into alerts_sealed first, in the same transaction; clear clinical "
    "text must not outlive the release that seals it (ADR 0038); the downgrade opens it again"
)
revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALERTS = "pets.alerts"  # as app/pets/service.py names it when this was written
PETS = sa.table(
    "pets",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("alerts", postgresql.ARRAY(sa.String(200))),
    sa.column("alerts_sealed", sa.LargeBinary()),
)


def upgrade() -> None:
    op.add_column("pets", sa.Column("alerts_sealed", sa.LargeBinary(), nullable=True))
    keys = FieldKeys("pets' alerts")
    with rls_released("pets"):
        for row in rows_in_batches(PETS, ("tenant_id", "alerts"), PETS.c.alerts != []):
            plain = json.dumps(list(row.alerts), ensure_ascii=False).encode()
            sealed = keys.seal(str(row.tenant_id), ALERTS, row.id, plain)
            op.get_bind().execute(
                sa.update(PETS).where(PETS.c.id == row.id).values(alerts_sealed=sealed)
            )
    op.drop_column("pets", "alerts")


def downgrade() -> None:
    op.add_column(
        "pets",
        sa.Column("alerts", postgresql.ARRAY(sa.String(200)), server_default="{}", nullable=False),
    )
    op.alter_column("pets", "alerts", server_default=None)
    keys = FieldKeys("pets' alerts")
    with rls_released("pets"):
        for row in rows_in_batches(
            PETS, ("tenant_id", "alerts_sealed"), PETS.c.alerts_sealed.is_not(None)
        ):
            plain = keys.open(str(row.tenant_id), ALERTS, row.id, row.alerts_sealed)
            op.get_bind().execute(
                sa.update(PETS).where(PETS.c.id == row.id).values(alerts=json.loads(plain))
            )
    op.drop_column("pets", "alerts_sealed")
