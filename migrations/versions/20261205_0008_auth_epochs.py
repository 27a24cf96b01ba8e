"""auth epochs: a counter per clinic and per user that moves whenever who may act changes

``clinics.auth_epoch`` moves (in the same transaction, by trigger) when one of the clinic's
credentials is revoked, expires early or is deleted, a membership's role or standing changes,
its billing account changes, or the clinic's own ``require_mfa``; ``users.auth_epoch`` when
the user is disabled, changes password or turns a second factor on or off. ``vetify_enter``
sets the transaction's clinic (``app.tenant_id``, as ``set_config`` did) and answers both
counters in the same round trip: a credential resolved earlier is still right exactly while
they have not moved (the credential cache, ADR 0019).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLINIC_WATCH = {
    # Not last_used_at, which a credential's use touches once a minute.
    "credentials": "UPDATE OF revoked_at, expires_at, user_id, kind, secret_hash, tenant_id",
    "memberships": "UPDATE OF role, active, user_id, tenant_id",
    "billing_accounts": "UPDATE",
}
"""Tenant tables whose rows a resolved credential depends on, and the changes that count."""


def upgrade() -> None:
    for table in ("clinics", "users"):
        op.add_column(
            table,
            sa.Column("auth_epoch", sa.BigInteger(), server_default="0", nullable=False),
        )
    op.execute(
        """
        CREATE FUNCTION vetify_enter(clinic uuid, member uuid)
        RETURNS TABLE (clinic_epoch bigint, user_epoch bigint)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            -- First the clinic, so that row-level security admits its row below.
            PERFORM set_config('app.tenant_id', clinic::text, true);
            RETURN QUERY SELECT
                (SELECT c.auth_epoch FROM clinics AS c WHERE c.id = clinic),
                (SELECT u.auth_epoch FROM users AS u WHERE u.id = member);
        END
        $$
        """
    )
    op.execute(f"GRANT EXECUTE ON FUNCTION vetify_enter(uuid, uuid) TO {rls.app_role()}")
    op.execute(
        """
        CREATE FUNCTION vetify_clinic_auth_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            row_clinic uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id
                                    ELSE NEW.tenant_id END;
        BEGIN
            UPDATE clinics SET auth_epoch = auth_epoch + 1 WHERE id = row_clinic;
            -- The change itself passed row-level security in that clinic, so its row is
            -- visible; missing it would leave a revoked credential cached. A clinic being
            -- deleted (its rows by cascade) is the one case without it.
            IF NOT FOUND AND TG_OP <> 'DELETE' THEN
                RAISE EXCEPTION 'clinic % not visible to move its auth epoch', row_clinic;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table, change in CLINIC_WATCH.items():
        op.execute(
            f"CREATE TRIGGER auth_epoch AFTER {change} OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION vetify_clinic_auth_changed()"
        )
    op.execute(
        """
        CREATE FUNCTION vetify_own_auth_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.auth_epoch := OLD.auth_epoch + 1;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER auth_epoch BEFORE UPDATE OF require_mfa ON clinics FOR EACH ROW"
        " WHEN (OLD.require_mfa IS DISTINCT FROM NEW.require_mfa)"
        " EXECUTE FUNCTION vetify_own_auth_changed()"
    )
    op.execute(
        "CREATE TRIGGER auth_epoch BEFORE UPDATE OF active, password_hash, totp_enabled_at"
        " ON users FOR EACH ROW WHEN (OLD.active IS DISTINCT FROM NEW.active"
        " OR OLD.password_hash IS DISTINCT FROM NEW.password_hash"
        " OR OLD.totp_enabled_at IS DISTINCT FROM NEW.totp_enabled_at)"
        " EXECUTE FUNCTION vetify_own_auth_changed()"
    )


def downgrade() -> None:
    for table in (*CLINIC_WATCH, "clinics", "users"):
        op.execute(f"DROP TRIGGER auth_epoch ON {table}")
    op.execute("DROP FUNCTION vetify_own_auth_changed()")
    op.execute("DROP FUNCTION vetify_clinic_auth_changed()")
    op.execute("DROP FUNCTION vetify_enter(uuid, uuid)")
    for table in ("clinics", "users"):
        op.drop_column(table, "auth_epoch")
