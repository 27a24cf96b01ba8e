"""Row-level security and grants, as migration operations (the database wall of tenancy).

Kept in one place so that every migration that adds a tenant table applies the same policy,
and the catalogue test in tests/security/test_tenant_tables.py has one rule to check against.
"""

from __future__ import annotations

from alembic import op

from app.db.migrate import APP_ROLE_ATTRIBUTE, identifier

TENANT_SETTING = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
USER_SETTING = "NULLIF(current_setting('app.user_id', true), '')::uuid"


def app_role() -> str:
    role = op.get_context().config.attributes.get(APP_ROLE_ATTRIBUTE)  # type: ignore[union-attr]
    if not role:
        raise RuntimeError("migrations need the service role to grant to (vetify migrate sets it)")
    return identifier(str(role))


def enable_tenant_rls(table: str) -> None:
    """Only rows of the clinic in ``app.tenant_id`` are visible or writable; none without it."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON {table} "
        f"USING (tenant_id = {TENANT_SETTING}) WITH CHECK (tenant_id = {TENANT_SETTING})"
    )


def grant(table: str, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    op.execute(f"GRANT {privileges} ON {table} TO {app_role()}")
