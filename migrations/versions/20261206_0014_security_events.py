"""security events: a clinic's in its trail, the others in their own table (issue 20)

``audit_events`` gains ``event`` and ``outcome``, set on a clinic's security events
(``change = 'security'``: a log-in, a refusal, a token made) and null on changes and reads; the
chain hashes them only when set, so every event written before hashes as it did
(app/audit/chain.py). ``security_events`` holds those of no clinic (a log-in refused for an
address, an account locked, a webhook's signature refused): the service may insert, never read,
change or delete them; operators read them as the backup role. Append-only, like the trail.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import rls

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("event", sa.String(length=40), nullable=True))
    op.add_column("audit_events", sa.Column("outcome", sa.String(length=40), nullable=True))
    op.create_table(
        "security_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("credential_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=True),
        sa.Column("client_ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index("ix_security_events_time", "security_events", ["created_at"])
    rls.grant("security_events", "INSERT")
    op.execute(
        """
        CREATE FUNCTION security_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'security events are never changed or deleted (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events"
        " FOR EACH ROW EXECUTE FUNCTION security_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER security_events_not_truncated BEFORE TRUNCATE ON security_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION security_events_append_only()"
    )


def downgrade() -> None:
    # The chain hashed each security event's name and outcome: without these columns, every
    # clinic's trail would fail its check from its first security event on. Refused instead.
    # Row-level security is forced on the owner too: the count must see every clinic's.
    op.execute("ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY")
    written = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM audit_events WHERE event IS NOT NULL")
    )
    op.execute("ALTER TABLE audit_events FORCE ROW LEVEL SECURITY")
    if written:
        raise RuntimeError(
            f"audit_events holds {written} security events, whose hashes cover the columns this"
            " downgrade would drop: the trails would no longer verify. Stay at 0014."
        )
    op.drop_table("security_events")
    op.execute("DROP FUNCTION security_events_append_only()")
    op.drop_column("audit_events", "outcome")
    op.drop_column("audit_events", "event")
