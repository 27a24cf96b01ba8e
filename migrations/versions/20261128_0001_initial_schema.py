"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 13:44:57.189844
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from app.db import rls

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TENANT_TABLES = (
    "locations",
    "rooms",
    "memberships",
    "credentials",
    "invitations",
    "customers",
    "consent_events",
    "pets",
    "pet_weights",
    "appointment_types",
    "appointments",
    "medical_records",
    "vaccinations",
    "prescriptions",
    "record_addenda",
)
APPEND_ONLY = {"consent_events", "record_addenda"}
NO_DELETE = {"medical_records"}


def upgrade() -> None:
    # A trusted extension: the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "clinics",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinics")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index(
        "uq_users_email_lower", "users", [sa.literal_column("lower(email)")], unique=True
    )
    op.create_table(
        "appointment_types",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("default_duration_minutes", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_appointment_types_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_types")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_appointment_types_tenant_id_id")),
    )
    op.create_index(
        op.f("ix_appointment_types_tenant_id"), "appointment_types", ["tenant_id"], unique=False
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Enum("session", "api_token", name="credential_kind"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_credentials_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_credentials_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_credentials_secret_hash")),
    )
    op.create_index(op.f("ix_credentials_tenant_id"), "credentials", ["tenant_id"], unique=False)
    op.create_index(op.f("ix_credentials_user_id"), "credentials", ["user_id"], unique=False)
    op.create_table(
        "customers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=False),
        sa.Column("last_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("address_line1", sa.String(length=200), nullable=True),
        sa.Column("address_line2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("postcode", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("preferred_language", sa.String(length=5), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_customers_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_customers_tenant_id_id")),
    )
    op.create_index(op.f("ix_customers_tenant_id"), "customers", ["tenant_id"], unique=False)
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "owner",
                "admin",
                "vet",
                "technician",
                "receptionist",
                "read_only",
                name="staff_role",
            ),
            nullable=False,
        ),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"], ["users.id"], name=op.f("fk_invitations_invited_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_invitations_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_invitations_secret_hash")),
    )
    op.create_index(op.f("ix_invitations_tenant_id"), "invitations", ["tenant_id"], unique=False)
    op.create_table(
        "locations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address_line1", sa.String(length=200), nullable=True),
        sa.Column("address_line2", sa.String(length=200), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("postcode", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_locations_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_locations")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_locations_tenant_id_id")),
    )
    op.create_index(op.f("ix_locations_tenant_id"), "locations", ["tenant_id"], unique=False)
    op.create_table(
        "memberships",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "owner",
                "admin",
                "vet",
                "technician",
                "receptionist",
                "read_only",
                name="staff_role",
            ),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_memberships_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("tenant_id", "user_id", name=op.f("uq_memberships_tenant_id_user_id")),
    )
    op.create_index(op.f("ix_memberships_tenant_id"), "memberships", ["tenant_id"], unique=False)
    op.create_index(op.f("ix_memberships_user_id"), "memberships", ["user_id"], unique=False)
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column(
            "channel", sa.Enum("email", "whatsapp", "sms", name="consent_channel"), nullable=False
        ),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column(
            "recorded_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("recorded_by", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_consent_events_recorded_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "customer_id"],
            ["customers.tenant_id", "customers.id"],
            name=op.f("fk_consent_events_tenant_id_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_consent_events_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_events")),
    )
    op.create_index(
        op.f("ix_consent_events_customer_id"), "consent_events", ["customer_id"], unique=False
    )
    op.create_index(
        op.f("ix_consent_events_tenant_id"), "consent_events", ["tenant_id"], unique=False
    )
    op.create_table(
        "pets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("customer_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "species",
            sa.Enum(
                "dog",
                "cat",
                "rabbit",
                "ferret",
                "rodent",
                "bird",
                "reptile",
                "horse",
                "other",
                name="species",
            ),
            nullable=False,
        ),
        sa.Column("breed", sa.String(length=100), nullable=True),
        sa.Column("sex", sa.Enum("male", "female", "unknown", name="pet_sex"), nullable=False),
        sa.Column("neutered", sa.Boolean(), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("microchip", sa.String(length=15), nullable=True),
        sa.Column("alerts", sa.ARRAY(sa.String(length=200)), nullable=False),
        sa.Column("deceased", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "customer_id"],
            ["customers.tenant_id", "customers.id"],
            name=op.f("fk_pets_tenant_id_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_pets_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pets")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_pets_tenant_id_id")),
        sa.UniqueConstraint("tenant_id", "microchip", name=op.f("uq_pets_tenant_id_microchip")),
    )
    op.create_index(op.f("ix_pets_customer_id"), "pets", ["customer_id"], unique=False)
    op.create_index(op.f("ix_pets_tenant_id"), "pets", ["tenant_id"], unique=False)
    op.create_table(
        "rooms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("location_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "location_id"],
            ["locations.tenant_id", "locations.id"],
            name=op.f("fk_rooms_tenant_id_location_id_locations"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_rooms_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rooms")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_rooms_tenant_id_id")),
    )
    op.create_index(op.f("ix_rooms_location_id"), "rooms", ["location_id"], unique=False)
    op.create_index(op.f("ix_rooms_tenant_id"), "rooms", ["tenant_id"], unique=False)
    op.create_table(
        "appointments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("pet_id", sa.Uuid(), nullable=False),
        sa.Column("vet_id", sa.Uuid(), nullable=False),
        sa.Column("room_id", sa.Uuid(), nullable=True),
        sa.Column("appointment_type_id", sa.Uuid(), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "scheduled",
                "confirmed",
                "checked_in",
                "in_exam",
                "completed",
                "cancelled",
                "no_show",
                name="appointment_status",
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        postgresql.ExcludeConstraint(
            (sa.literal_column("tenant_id"), "="),
            (sa.literal_column("room_id"), "="),
            (sa.text("tstzrange(starts_at, ends_at, '[)')"), "&&"),
            where=sa.text("room_id IS NOT NULL AND status NOT IN ('cancelled', 'no_show')"),
            using="gist",
            name="no_room_double_booking",
        ),
        postgresql.ExcludeConstraint(
            (sa.literal_column("tenant_id"), "="),
            (sa.literal_column("vet_id"), "="),
            (sa.text("tstzrange(starts_at, ends_at, '[)')"), "&&"),
            where=sa.text("status NOT IN ('cancelled', 'no_show')"),
            using="gist",
            name="no_vet_double_booking",
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_appointments_ends_after_start")),
        sa.ForeignKeyConstraint(
            ["tenant_id", "appointment_type_id"],
            ["appointment_types.tenant_id", "appointment_types.id"],
            name=op.f("fk_appointments_tenant_id_appointment_type_id_appointment_types"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "pet_id"],
            ["pets.tenant_id", "pets.id"],
            name=op.f("fk_appointments_tenant_id_pet_id_pets"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "room_id"],
            ["rooms.tenant_id", "rooms.id"],
            name=op.f("fk_appointments_tenant_id_room_id_rooms"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "vet_id"],
            ["memberships.tenant_id", "memberships.user_id"],
            name=op.f("fk_appointments_tenant_id_vet_id_memberships"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_appointments_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_appointments_tenant_id_id")),
    )
    op.create_index(op.f("ix_appointments_pet_id"), "appointments", ["pet_id"], unique=False)
    op.create_index(op.f("ix_appointments_starts_at"), "appointments", ["starts_at"], unique=False)
    op.create_index(op.f("ix_appointments_tenant_id"), "appointments", ["tenant_id"], unique=False)
    op.create_index(op.f("ix_appointments_vet_id"), "appointments", ["vet_id"], unique=False)
    op.create_table(
        "pet_weights",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("pet_id", sa.Uuid(), nullable=False),
        sa.Column("weight_kg", sa.Numeric(precision=7, scale=3), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_pet_weights_recorded_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "pet_id"],
            ["pets.tenant_id", "pets.id"],
            name=op.f("fk_pet_weights_tenant_id_pet_id_pets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_pet_weights_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pet_weights")),
    )
    op.create_index(op.f("ix_pet_weights_pet_id"), "pet_weights", ["pet_id"], unique=False)
    op.create_index(op.f("ix_pet_weights_tenant_id"), "pet_weights", ["tenant_id"], unique=False)
    op.create_table(
        "medical_records",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("pet_id", sa.Uuid(), nullable=False),
        sa.Column("appointment_id", sa.Uuid(), nullable=True),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("visited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subjective", sa.Text(), nullable=False),
        sa.Column("objective", sa.Text(), nullable=False),
        sa.Column("assessment", sa.Text(), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("weight_kg", sa.Numeric(precision=7, scale=3), nullable=True),
        sa.Column("temperature_c", sa.Numeric(precision=4, scale=1), nullable=True),
        sa.Column("heart_rate_bpm", sa.Integer(), nullable=True),
        sa.Column("respiratory_rate_bpm", sa.Integer(), nullable=True),
        sa.Column("signed_by", sa.Uuid(), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locks_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_medical_records_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["signed_by"], ["users.id"], name=op.f("fk_medical_records_signed_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "appointment_id"],
            ["appointments.tenant_id", "appointments.id"],
            name=op.f("fk_medical_records_tenant_id_appointment_id_appointments"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "pet_id"],
            ["pets.tenant_id", "pets.id"],
            name=op.f("fk_medical_records_tenant_id_pet_id_pets"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_medical_records_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_medical_records")),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_medical_records_tenant_id_id")),
    )
    op.create_index(op.f("ix_medical_records_pet_id"), "medical_records", ["pet_id"], unique=False)
    op.create_index(
        op.f("ix_medical_records_tenant_id"), "medical_records", ["tenant_id"], unique=False
    )
    op.create_table(
        "prescriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("drug", sa.String(length=200), nullable=False),
        sa.Column("dose", sa.String(length=100), nullable=False),
        sa.Column("frequency", sa.String(length=100), nullable=False),
        sa.Column("duration_days", sa.Integer(), nullable=True),
        sa.Column("instructions", sa.String(length=2000), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "record_id"],
            ["medical_records.tenant_id", "medical_records.id"],
            name=op.f("fk_prescriptions_tenant_id_record_id_medical_records"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_prescriptions_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prescriptions")),
    )
    op.create_index(
        op.f("ix_prescriptions_record_id"), "prescriptions", ["record_id"], unique=False
    )
    op.create_index(
        op.f("ix_prescriptions_tenant_id"), "prescriptions", ["tenant_id"], unique=False
    )
    op.create_table(
        "record_addenda",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("author_id", sa.Uuid(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_record_addenda_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "record_id"],
            ["medical_records.tenant_id", "medical_records.id"],
            name=op.f("fk_record_addenda_tenant_id_record_id_medical_records"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_record_addenda_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_addenda")),
    )
    op.create_index(
        op.f("ix_record_addenda_record_id"), "record_addenda", ["record_id"], unique=False
    )
    op.create_index(
        op.f("ix_record_addenda_tenant_id"), "record_addenda", ["tenant_id"], unique=False
    )
    op.create_table(
        "vaccinations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("vaccine", sa.String(length=200), nullable=False),
        sa.Column("lot", sa.String(length=100), nullable=True),
        sa.Column("expiry_date", sa.Date(), nullable=True),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_due", sa.Date(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "record_id"],
            ["medical_records.tenant_id", "medical_records.id"],
            name=op.f("fk_vaccinations_tenant_id_record_id_medical_records"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["clinics.id"],
            name=op.f("fk_vaccinations_tenant_id_clinics"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vaccinations")),
    )
    op.create_index(op.f("ix_vaccinations_record_id"), "vaccinations", ["record_id"], unique=False)
    op.create_index(op.f("ix_vaccinations_tenant_id"), "vaccinations", ["tenant_id"], unique=False)
    _security()
    _record_lock()


def _security() -> None:
    for table in TENANT_TABLES:
        rls.enable_tenant_rls(table)
        if table in APPEND_ONLY:
            rls.grant(table, "SELECT, INSERT")
        elif table in NO_DELETE:
            rls.grant(table, "SELECT, INSERT, UPDATE")
        else:
            rls.grant(table)
    # A user sees their own memberships in every clinic (login lists them; switching uses them).
    op.execute(
        f"CREATE POLICY member_self ON memberships FOR SELECT USING (user_id = {rls.USER_SETTING})"
    )
    # The clinic row: writable in its own context, readable by its members.
    op.execute("ALTER TABLE clinics ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE clinics FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON clinics "
        f"USING (id = {rls.TENANT_SETTING}) WITH CHECK (id = {rls.TENANT_SETTING})"
    )
    op.execute(
        "CREATE POLICY member_clinics ON clinics FOR SELECT USING (id IN "
        f"(SELECT tenant_id FROM memberships WHERE user_id = {rls.USER_SETTING}))"
    )
    rls.grant("clinics", "SELECT, INSERT, UPDATE")
    rls.grant("users", "SELECT, INSERT, UPDATE")
    rls.grant("alembic_version", "SELECT")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {rls.app_role()}")


def _record_lock() -> None:
    """A locked record and its vaccinations/prescriptions cannot change, whoever asks."""
    op.execute(
        """
        CREATE FUNCTION reject_locked_record() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'medical record % is locked', OLD.id
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER medical_records_locked BEFORE UPDATE OR DELETE ON medical_records
        FOR EACH ROW WHEN (OLD.locks_at IS NOT NULL AND OLD.locks_at <= now())
        EXECUTE FUNCTION reject_locked_record()
        """
    )
    op.execute(
        """
        CREATE FUNCTION reject_change_to_locked_record_part() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (
                SELECT 1 FROM medical_records
                WHERE id IN (NEW.record_id, OLD.record_id)
                  AND locks_at IS NOT NULL AND locks_at <= now()
            ) THEN
                RAISE EXCEPTION 'medical record is locked'
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
            RETURN COALESCE(NEW, OLD);
        END $$
        """
    )
    for table in ("vaccinations", "prescriptions"):
        op.execute(
            f"CREATE TRIGGER {table}_record_locked BEFORE INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION reject_change_to_locked_record_part()"
        )


def downgrade() -> None:
    op.execute("DROP POLICY member_clinics ON clinics")
    op.drop_index(op.f("ix_vaccinations_tenant_id"), table_name="vaccinations")
    op.drop_index(op.f("ix_vaccinations_record_id"), table_name="vaccinations")
    op.drop_table("vaccinations")
    op.drop_index(op.f("ix_record_addenda_tenant_id"), table_name="record_addenda")
    op.drop_index(op.f("ix_record_addenda_record_id"), table_name="record_addenda")
    op.drop_table("record_addenda")
    op.drop_index(op.f("ix_prescriptions_tenant_id"), table_name="prescriptions")
    op.drop_index(op.f("ix_prescriptions_record_id"), table_name="prescriptions")
    op.drop_table("prescriptions")
    op.drop_index(op.f("ix_medical_records_tenant_id"), table_name="medical_records")
    op.drop_index(op.f("ix_medical_records_pet_id"), table_name="medical_records")
    op.drop_table("medical_records")
    op.drop_index(op.f("ix_pet_weights_tenant_id"), table_name="pet_weights")
    op.drop_index(op.f("ix_pet_weights_pet_id"), table_name="pet_weights")
    op.drop_table("pet_weights")
    op.drop_index(op.f("ix_appointments_vet_id"), table_name="appointments")
    op.drop_index(op.f("ix_appointments_tenant_id"), table_name="appointments")
    op.drop_index(op.f("ix_appointments_starts_at"), table_name="appointments")
    op.drop_index(op.f("ix_appointments_pet_id"), table_name="appointments")
    op.drop_table("appointments")
    op.drop_index(op.f("ix_rooms_tenant_id"), table_name="rooms")
    op.drop_index(op.f("ix_rooms_location_id"), table_name="rooms")
    op.drop_table("rooms")
    op.drop_index(op.f("ix_pets_tenant_id"), table_name="pets")
    op.drop_index(op.f("ix_pets_customer_id"), table_name="pets")
    op.drop_table("pets")
    op.drop_index(op.f("ix_consent_events_tenant_id"), table_name="consent_events")
    op.drop_index(op.f("ix_consent_events_customer_id"), table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_index(op.f("ix_memberships_user_id"), table_name="memberships")
    op.drop_index(op.f("ix_memberships_tenant_id"), table_name="memberships")
    op.drop_table("memberships")
    op.drop_index(op.f("ix_locations_tenant_id"), table_name="locations")
    op.drop_table("locations")
    op.drop_index(op.f("ix_invitations_tenant_id"), table_name="invitations")
    op.drop_table("invitations")
    op.drop_index(op.f("ix_customers_tenant_id"), table_name="customers")
    op.drop_table("customers")
    op.drop_index(op.f("ix_credentials_user_id"), table_name="credentials")
    op.drop_index(op.f("ix_credentials_tenant_id"), table_name="credentials")
    op.drop_table("credentials")
    op.drop_index(op.f("ix_appointment_types_tenant_id"), table_name="appointment_types")
    op.drop_table("appointment_types")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_table("users")
    op.drop_table("clinics")
    op.execute("DROP FUNCTION reject_change_to_locked_record_part()")
    op.execute("DROP FUNCTION reject_locked_record()")
    for enum in (
        "appointment_status",
        "species",
        "pet_sex",
        "consent_channel",
        "staff_role",
        "credential_kind",
    ):
        op.execute(f"DROP TYPE {enum}")
