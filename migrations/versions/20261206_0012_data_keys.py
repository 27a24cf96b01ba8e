"""data keys, and the TOTP secret sealed (ADR 0028)

``data_keys`` holds each scope's data keys, wrapped by the key-encryption keys; the service
may read and add them. ``users.totp_secret`` becomes ``totp_secret_sealed``: each secret there
is sealed with the platform's data key on the way up, and opened again on the way down, with
the keys ``vetify migrate`` passes from the settings (``keys`` in Alembic's attributes).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 11:00:00
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from app.db import rls
from app.db.migrate import migration_keys, unwrapped_data_key
from app.kit import sealing

DESTRUCTIVE = (
    "users.totp_secret is sealed into totp_secret_sealed first, in the same transaction; a "
    "plain secret must not outlive the release that seals it (ADR 0028); the downgrade opens "
    "it again"
)
revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM = "platform"  # app.keys.service.PLATFORM, as it was when this was written
FIELD = "users.totp_secret"
WHAT = "TOTP secrets"
BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("scope", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kek_id", sa.String(length=300), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("scope", "version", name=op.f("pk_data_keys")),
    )
    rls.grant("data_keys", "SELECT, INSERT")
    op.add_column("users", sa.Column("totp_secret_sealed", sa.LargeBinary(), nullable=True))
    platform: tuple[int, bytes] | None = None  # made at the first secret: none, no key
    for row in _with_secrets("totp_secret"):
        platform = platform or _platform_key()
        version, key = platform
        sealed = sealing.seal(
            key, version, row.totp_secret.encode(), sealing.field_aad(PLATFORM, FIELD, row.id)
        )
        op.get_bind().execute(
            sa.text("UPDATE users SET totp_secret_sealed = :sealed WHERE id = :id"),
            {"sealed": sealed, "id": row.id},
        )
    op.drop_column("users", "totp_secret")


def downgrade() -> None:
    op.add_column("users", sa.Column("totp_secret", sa.String(length=64), nullable=True))
    keys: dict[int, bytes] = {}
    for row in _with_secrets("totp_secret_sealed"):
        version = sealing.version_of(row.totp_secret_sealed)
        if version not in keys:
            keys[version] = unwrapped_data_key(
                op.get_bind(), migration_keys(WHAT), PLATFORM, version
            )
        secret = sealing.unseal(
            keys[version], row.totp_secret_sealed, sealing.field_aad(PLATFORM, FIELD, row.id)
        )
        op.get_bind().execute(
            sa.text("UPDATE users SET totp_secret = :secret WHERE id = :id"),
            {"secret": secret.decode(), "id": row.id},
        )
    op.drop_column("users", "totp_secret_sealed")
    op.drop_table("data_keys")


def _with_secrets(column: str) -> Iterator[Any]:
    """The users with a secret in ``column``, a batch at a time in id order."""
    users = sa.table("users", sa.column("id", sa.Uuid()), sa.column(column))
    after = None
    while True:
        query = sa.select(users.c.id, users.c[column]).where(users.c[column].is_not(None))
        if after is not None:
            query = query.where(users.c.id > after)
        batch = op.get_bind().execute(query.order_by(users.c.id).limit(BATCH)).all()
        yield from batch
        if len(batch) < BATCH:
            return
        after = batch[-1].id


def _platform_key() -> tuple[int, bytes]:
    """Version 1 of the platform's data key, made now (the table is new)."""
    key = sealing.new_data_key()
    kek_id, wrapped = migration_keys(WHAT).wrap(key, sealing.key_context(PLATFORM, 1))
    op.get_bind().execute(
        sa.text(
            "INSERT INTO data_keys (scope, version, kek_id, wrapped)"
            " VALUES (:scope, 1, :kek_id, :wrapped)"
        ),
        {"scope": PLATFORM, "kek_id": kek_id, "wrapped": wrapped},
    )
    return 1, key
