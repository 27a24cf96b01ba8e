"""Plans and what each one entitles a clinic to: the one table the rest of the app reads.

A clinic's plan is set by its Stripe subscription (the price it pays, matched to a plan through
the ``VETIFY_STRIPE_PRICE_<PLAN>`` settings); a clinic on trial has the default plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.settings import Settings


class Plan(StrEnum):
    starter = "starter"
    professional = "professional"
    enterprise = "enterprise"


DEFAULT_PLAN = Plan.starter


@dataclass(frozen=True)
class Entitlements:
    staff_seats: int
    locations: int
    reminder_messages_per_month: int
    api_requests_per_minute: int
    """The clinic's whole API quota, shared by all its staff and tokens."""


PLANS: dict[Plan, Entitlements] = {
    Plan.starter: Entitlements(
        staff_seats=5,
        locations=1,
        reminder_messages_per_month=500,
        api_requests_per_minute=600,
    ),
    Plan.professional: Entitlements(
        staff_seats=25,
        locations=3,
        reminder_messages_per_month=5_000,
        api_requests_per_minute=1_800,
    ),
    Plan.enterprise: Entitlements(
        staff_seats=500,
        locations=50,
        reminder_messages_per_month=50_000,
        api_requests_per_minute=6_000,
    ),
}


def entitlements(plan: Plan) -> Entitlements:
    return PLANS[plan]


def price_id(settings: Settings, plan: Plan) -> str | None:
    """The Stripe price a clinic pays for ``plan``, if it is on sale."""
    price: str | None = getattr(settings, f"stripe_price_{plan.value}")
    return price


def plan_for_price(settings: Settings, price: str) -> Plan | None:
    return next((plan for plan in Plan if price_id(settings, plan) == price), None)
