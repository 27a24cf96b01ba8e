from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import Field

from app.billing.models import SubscriptionStatus
from app.billing.plans import Plan
from app.kit.types import LAX, Input, Output


class EntitlementsOut(Output):
    staff_seats: int
    locations: int
    reminder_messages_per_month: int
    api_requests_per_minute: int


class BillingOut(Output):
    clinic_id: uuid.UUID
    plan: Plan
    status: SubscriptionStatus = Field(
        description="Stripe's subscription status; `trialing` without a subscription is the"
        " trial every clinic starts with."
    )
    read_only: bool = Field(
        description="Writes answer 402 until the clinic pays; reads and exports keep working."
    )
    subscribed: bool
    trial_ends_at: dt.datetime | None
    current_period_end: dt.datetime | None
    cancel_at_period_end: bool
    past_due_since: dt.datetime | None
    grace_ends_at: dt.datetime | None = Field(
        description="A past-due clinic turns read-only at this time unless it pays."
    )
    trial_will_end_at: dt.datetime | None = Field(
        description="When the owners were told the trial ends (3 days ahead)."
    )
    entitlements: EntitlementsOut


class CheckoutIn(Input):
    plan: Annotated[Plan, LAX]


class RedirectOut(Output):
    url: str = Field(description="Send the user's browser here (Stripe's hosted page).")


class WebhookReceipt(Output):
    received: bool
    duplicate: bool = Field(description="This event was delivered before; it is applied once.")
