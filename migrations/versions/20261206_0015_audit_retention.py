"""audit retention: a clinic's chain may start after event 1, once its oldest events are pruned

``audit_heads`` gains ``base_seq`` and ``base_hash``: the last event pruned by retention (``vetify
audit prune``) and its hash, from which the chain is checked (0 and 32 zero bytes: nothing
pruned, the chain starts at GENESIS). The append-only trigger now lets an event be deleted once
its clinic's base has moved past it, and nothing else. Only the schema's owner may move a base
(the service role may insert a head's ``id``, ``tenant_id``, ``seq`` and ``hash`` and update
the last two, no more), so the owner prunes; the service never can. ``security_events``' trigger
lets a row older than a year go (the shortest retention ``VETIFY_AUDIT_RETENTION_DAYS`` allows),
so the owner's prune can remove them too, and never a recent one.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import rls

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PRUNED_EVENT = """
            IF TG_OP = 'DELETE' AND OLD.seq <= (
                SELECT base_seq FROM audit_heads WHERE tenant_id = OLD.tenant_id
            ) THEN
                RETURN OLD;  -- pruned by retention: the chain's base is past it (ADR 0027)
            END IF;"""
_OLD_SECURITY_EVENT = """
            IF TG_OP = 'DELETE' AND OLD.created_at < now() - interval '365 days' THEN
                RETURN OLD;  -- past the shortest retention: `vetify audit prune` (ADR 0027)
            END IF;"""


def _append_only(table: str, what: str, unless: str = "") -> str:
    """``table``'s trigger function: every change refused (``what`` names its rows), but for
    the deletes ``unless`` lets through."""
    return f"""
        CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN{unless}
            RAISE EXCEPTION '{what} are never changed or deleted (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """


def upgrade() -> None:
    op.add_column(
        "audit_heads",
        sa.Column("base_seq", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "audit_heads",
        sa.Column(
            "base_hash",
            sa.LargeBinary(length=32),
            server_default=sa.text("'\\x" + "00" * 32 + "'::bytea"),
            nullable=False,
        ),
    )
    op.execute(_append_only("audit_events", "audit events", _PRUNED_EVENT))
    op.execute(_append_only("security_events", "security events", _OLD_SECURITY_EVENT))
    # A head's base is the owner's to move: the service inserts a head without one.
    op.execute(f"REVOKE INSERT ON audit_heads FROM {rls.app_role()}")
    rls.grant("audit_heads", "INSERT (id, tenant_id, seq, hash)")


def downgrade() -> None:
    # Without a base, a pruned clinic's chain would be checked from event 1, which is gone.
    # Row-level security is forced on the owner too: the count must see every clinic's.
    op.execute("ALTER TABLE audit_heads NO FORCE ROW LEVEL SECURITY")
    pruned = op.get_bind().scalar(sa.text("SELECT count(*) FROM audit_heads WHERE base_seq > 0"))
    op.execute("ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY")
    if pruned:
        raise RuntimeError(
            f"{pruned} clinics' trails were pruned: their chains start after event 1, which"
            " only 0015 can check. Stay at 0015."
        )
    op.execute(_append_only("audit_events", "audit events"))
    op.execute(_append_only("security_events", "security events"))
    op.execute(f"REVOKE INSERT (id, tenant_id, seq, hash) ON audit_heads FROM {rls.app_role()}")
    rls.grant("audit_heads", "INSERT")
    op.drop_column("audit_heads", "base_hash")
    op.drop_column("audit_heads", "base_seq")
