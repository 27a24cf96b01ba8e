from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import BigInteger, CheckConstraint, LargeBinary, SmallInteger, String, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, Entity, TenantScoped, tenant_fk, tenant_key


class Clinic(Entity, Base):
    """The tenant. Its own row is visible to its members only (row-level security on ``id``)."""

    __tablename__ = "clinics"
    __table_args__ = (
        CheckConstraint(
            "inactive_client_years BETWEEN 1 AND 50", name="inactive_client_years_range"
        ),
        CheckConstraint(
            "record_retention_years BETWEEN 1 AND 100", name="record_retention_years_range"
        ),
        CheckConstraint("country ~ '^[A-Z]{2}$'", name="country_code"),
    )

    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Every member must log in with a second factor; until they enrol they may only do that.
    require_mfa: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Moved by the database whenever who may act in the clinic changes (migration 0008).
    auth_epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # A client inactive this long is erased by `vetify retention --apply` (ADR 0031); None:
    # kept until erased on request.
    inactive_client_years: Mapped[int | None] = mapped_column(SmallInteger, server_default="7")
    # Where the clinic practises (ISO 3166-1 alpha-2): its law's minimum for medical records
    # (VETIFY_RECORD_RETENTION_YEARS); None: the minimum of any other country.
    country: Mapped[str | None] = mapped_column(String(2))
    # Years after a patient's last visit its records are kept, at least the country's minimum;
    # None: that minimum. Then `vetify retention --apply` removes them (ADR 0035).
    record_retention_years: Mapped[int | None] = mapped_column(SmallInteger)
    # When its data was deleted, after it left (ADR 0037): the row stays, named no more, for its
    # audit trail (kept for its own retention).
    deleted_at: Mapped[dt.datetime | None]
    # The key of the clinic's blind indexes, sealed with its data key (app/keys/blind.py).
    index_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)


class Location(TenantScoped, Base):
    __tablename__ = "locations"
    __table_args__ = (tenant_key(),)

    name: Mapped[str] = mapped_column(String(200))
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    postcode: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))
    phone: Mapped[str | None] = mapped_column(String(16))


class Room(TenantScoped, Base):
    """A bookable resource: exam room, surgery, kennel, equipment."""

    __tablename__ = "rooms"
    __table_args__ = (tenant_key(), tenant_fk("location_id", "locations"))

    location_id: Mapped[uuid.UUID] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(default=True)
