from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TenantScoped, pg_enum, tenant_fk, tenant_key


class Species(StrEnum):
    dog = "dog"
    cat = "cat"
    rabbit = "rabbit"
    ferret = "ferret"
    rodent = "rodent"
    bird = "bird"
    reptile = "reptile"
    horse = "horse"
    other = "other"


class Sex(StrEnum):
    male = "male"
    female = "female"
    unknown = "unknown"


class Pet(TenantScoped, Base):
    __tablename__ = "pets"
    __table_args__ = (
        tenant_key(),
        tenant_fk("customer_id", "customers"),
        UniqueConstraint("tenant_id", "microchip"),
    )

    customer_id: Mapped[uuid.UUID] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(String(100))
    species: Mapped[Species] = mapped_column(pg_enum(Species, "species"))
    breed: Mapped[str | None] = mapped_column(String(100))
    sex: Mapped[Sex] = mapped_column(pg_enum(Sex, "pet_sex"), default=Sex.unknown)
    neutered: Mapped[bool] = mapped_column(default=False)
    date_of_birth: Mapped[dt.date | None]
    microchip: Mapped[str | None] = mapped_column(String(15))
    alerts_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The alerts (a JSON list of short texts: "bites when muzzled"), sealed with the clinic's
    data key (ADR 0038); null when there are none."""
    deceased: Mapped[bool] = mapped_column(default=False)


class WeightMeasurement(TenantScoped, Base):
    __tablename__ = "pet_weights"
    __table_args__ = (tenant_fk("pet_id", "pets", ondelete="CASCADE"),)

    pet_id: Mapped[uuid.UUID] = mapped_column(index=True)
    weight_kg: Mapped[Decimal] = mapped_column(Numeric(7, 3))
    measured_at: Mapped[dt.datetime]
    recorded_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
