"""files sealed at rest: the data key version each stored file is sealed with (ADR 0034)

Attachments' bytes are stored sealed with their clinic's data key from this version on, and
each row keeps the version (``sealed_with``) so that ``vetify keys rotate-dek`` can find, seal
again and count the files still on an older key before it retires one; client exports were
already sealed, and now keep it too. The files themselves are in storage, out of a migration's
reach: those stored before are left as they are (``sealed_with`` null: in the clear for an
attachment, read from its header for an export) and are sealed by the next
``vetify keys rotate-dek --clinic`` (docs/security.md).

The downgrade is refused while any file is stored sealed: the earlier version would serve an
attachment's sealed bytes as its content (and refuse them, their checksum differing).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db.migrate import rls_released

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("attachments", sa.Column("sealed_with", sa.Integer(), nullable=True))
    op.add_column("client_exports", sa.Column("sealed_with", sa.Integer(), nullable=True))


def downgrade() -> None:
    with rls_released("attachments"):  # the count must see every clinic's
        sealed = op.get_bind().scalar(
            sa.text("SELECT count(*) FROM attachments WHERE sealed_with IS NOT NULL")
        )
    if sealed:
        raise RuntimeError(
            f"{sealed} attachments are stored sealed, which the earlier version cannot open:"
            " it would refuse to serve them. Stay at 0021."
        )
    op.drop_column("client_exports", "sealed_with")
    op.drop_column("attachments", "sealed_with")
