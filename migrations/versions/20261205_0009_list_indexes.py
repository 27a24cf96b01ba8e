"""list indexes: the orders the paged lists read in, per clinic (issue 18, docs/indexes.md)

Found by tests/load/test_plans.py over a database at realistic size (``large``: 2,000,000
appointments, the biggest clinic 129,000): without them a page of the appointment book walked
``ix_appointments_starts_at`` across every clinic's rows, filtering out the others' (46,000
buffers for a page of confirmed appointments), read the clinic's whole book through
``ix_appointments_tenant_id`` for one day (8,000) or ANDed a vet's rows with the clinic's and
sorted them (5,000); a room's book read 12,000. With them each reads about 50.

The single-column ``starts_at`` and ``vet_id`` indexes go: no statement reads appointments
across clinics, each lookup by vet also names the clinic (the composite foreign key to
memberships is ``(tenant_id, vet_id)``), and the first was the planner's trap above.

Built in the migration's transaction, not ``CONCURRENTLY``: a concurrent build waits for every
transaction that might see the table, among them a second ``vetify migrate`` waiting for the
migration lock the first holds (a deadlock; tests/integration/test_cli.py). Building them
locks writes to appointments for the build, about 1.5 s an index at 2,000,000 rows here; on a
bigger table build them by hand first with ``CREATE INDEX CONCURRENTLY`` under the same names
and the migration, finding them (``IF NOT EXISTS``), only drops the superseded two.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# GET /appointments in its order (starts_at, id): the book, unfiltered, by day (a range of
# starts_at) or by status (read in order, filtered); a vet's book; a room's book.
INDEXES = {
    "ix_appointments_tenant_id_starts_at_id": ["tenant_id", "starts_at", "id"],
    "ix_appointments_tenant_id_vet_id_starts_at_id": ["tenant_id", "vet_id", "starts_at", "id"],
    "ix_appointments_tenant_id_room_id_starts_at_id": ["tenant_id", "room_id", "starts_at", "id"],
}
SUPERSEDED = {"ix_appointments_starts_at": ["starts_at"], "ix_appointments_vet_id": ["vet_id"]}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "appointments", columns, if_not_exists=True)
    for name in SUPERSEDED:
        op.drop_index(name, table_name="appointments")


def downgrade() -> None:
    for name, columns in SUPERSEDED.items():
        op.create_index(name, "appointments", columns)
    for name in INDEXES:
        op.drop_index(name, table_name="appointments")
