"""A database URL as libpq reads it: the driver's name gone, the password kept (asyncpg, psql
and pg_dump connect with it), and the role it names."""

from __future__ import annotations

from app.db.migrate import plain_url, role_of


def test_a_url_for_libpq_keeps_its_password_and_drops_the_driver() -> None:
    password = "not-a-real-one"  # pragma: allowlist secret
    url = f"postgresql+asyncpg://vetify_owner:{password}@db.example:5432/vetify"
    assert plain_url(url) == f"postgresql://vetify_owner:{password}@db.example:5432/vetify"
    assert role_of(url) == "vetify_owner"
