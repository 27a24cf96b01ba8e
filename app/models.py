"""Every model, imported so that ``Base.metadata`` is complete (Alembic, tests)."""

from app.appointments.models import Appointment, AppointmentType
from app.attachments.models import Attachment
from app.audit.models import AuditEvent, AuditHead
from app.auth.models import AccountToken, Credential, Invitation, Membership, User
from app.billing.models import BillingAccount, StripeEvent
from app.clinics.models import Clinic, Location, Room
from app.customers.models import ConsentEvent, Customer
from app.db.base import Base
from app.observability.usage import ClinicUsage
from app.pets.models import Pet, WeightMeasurement
from app.privacy.models import ClientExport
from app.records.models import Addendum, MedicalRecord, Prescription, Vaccination

__all__ = [
    "AccountToken",
    "Addendum",
    "Appointment",
    "AppointmentType",
    "Attachment",
    "AuditEvent",
    "AuditHead",
    "Base",
    "BillingAccount",
    "ClientExport",
    "Clinic",
    "ClinicUsage",
    "ConsentEvent",
    "Credential",
    "Customer",
    "Invitation",
    "Location",
    "MedicalRecord",
    "Membership",
    "Pet",
    "Prescription",
    "Room",
    "StripeEvent",
    "User",
    "Vaccination",
    "WeightMeasurement",
]
