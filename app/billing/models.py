"""Billing tables: each clinic's account (its trial and Stripe subscription, as last synced), and
every Stripe event received (the webhook inbox)."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.billing.plans import DEFAULT_PLAN, Plan
from app.db.base import Base, TenantScoped, pg_enum


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses. ``trialing`` with no subscription is the trial every
    clinic starts with at signup, without a card."""

    trialing = "trialing"
    active = "active"
    past_due = "past_due"
    unpaid = "unpaid"
    canceled = "canceled"
    paused = "paused"
    incomplete = "incomplete"
    incomplete_expired = "incomplete_expired"


class BillingAccount(TenantScoped, Base):
    """One per clinic, made at signup. Webhook handlers are the only writers after that."""

    __tablename__ = "billing_accounts"
    __table_args__ = (UniqueConstraint("tenant_id"),)

    status: Mapped[SubscriptionStatus] = mapped_column(
        pg_enum(SubscriptionStatus, "subscription_status")
    )
    plan: Mapped[Plan] = mapped_column(
        pg_enum(Plan, "clinic_plan"), default=DEFAULT_PLAN, server_default=DEFAULT_PLAN.value
    )
    """What the clinic's entitlements are: the default plan on trial, then the plan of the
    price its Stripe subscription pays."""
    trial_ends_at: Mapped[dt.datetime | None]
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255))
    subscription_created_at: Mapped[dt.datetime | None]
    """Stripe's ``created`` of the tracked subscription: a newer subscription replaces it, an
    older one's events are ignored."""
    current_period_end: Mapped[dt.datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    past_due_since: Mapped[dt.datetime | None]
    """When the subscription was first seen past due: the grace period counts from here."""
    trial_will_end_at: Mapped[dt.datetime | None]
    """When the owners were told the trial ends soon (once per trial)."""
    synced_at: Mapped[dt.datetime | None]


class EventStatus(StrEnum):
    pending = "pending"  # stored, its job not yet done
    processed = "processed"
    ignored = "ignored"  # a type billing does not handle, or not a Vetify subscription
    retrying = "retrying"  # failed, the job queue will try again
    failed = "failed"  # failed every attempt: an operator looks, then replays


class StripeEvent(Base):
    """A Stripe event as delivered, stored before it is acknowledged (the primary key is
    Stripe's event id: a second delivery of it inserts nothing)."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(255), index=True)
    created: Mapped[dt.datetime]
    """Stripe's time of the event."""
    livemode: Mapped[bool]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[EventStatus] = mapped_column(
        pg_enum(EventStatus, "stripe_event_status"), index=True
    )
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    """Why an event changed nothing (ignored, or about an older subscription)."""
    clinic_id: Mapped[uuid.UUID | None]
    """The clinic the event was about, once processing resolved it."""
    received_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[dt.datetime | None]
