"""Plans and what each one entitles a clinic to: the one table the rest of the app reads.

Billing (Stripe) will set a clinic's plan; until then every clinic is on the default plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
