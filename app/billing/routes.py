"""Billing over HTTP: the clinic's plan and status, Stripe Checkout and Customer Portal, and
Stripe's webhook (public: the signature is its authentication)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from app.auth.deps import AppSettings, requires
from app.auth.permissions import Action
from app.auth.principal import Principal
from app.auth.quotas import AppQuotas, client_ip, spend
from app.auth.service import EmailUnverified
from app.billing import account, intake
from app.billing.plans import entitlements
from app.billing.schemas import (
    BillingOut,
    CheckoutIn,
    EntitlementsOut,
    RedirectOut,
    WebhookReceipt,
)
from app.billing.stripe_api import (
    BillingNotConfigured,
    BillingRefused,
    BillingUnavailable,
    Stripe,
)
from app.db.session import DbSession
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    Unauthenticated,
    responses,
)

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
WEBHOOK_PATH = "/api/v1/billing/webhooks/stripe"
"""Signed by Stripe: its body is verified as sent before anything else reads it."""
Manager = Annotated[Principal, Depends(requires(Action.billing_manage))]
STRIPE_CALL = responses(
    Unauthenticated,
    Forbidden,
    EmailUnverified,
    Conflict,
    InvalidInput,
    BillingUnavailable,
    BillingNotConfigured,
    BillingRefused,
)


async def stripe_client(request: Request) -> AsyncIterator[Stripe]:
    """A client per request: its connections belong to the request's event loop, and checkout
    and portal are rare enough that reusing connections saves nothing worth sharing state."""
    client = Stripe(request.app.state.settings)
    try:
        yield client
    finally:
        await client.close()


StripeClient = Annotated[Stripe, Depends(stripe_client)]


@router.get("", responses=responses(Unauthenticated, Forbidden), summary="Plan and payment state")
async def get_billing(caller: Manager, session: DbSession, settings: AppSettings) -> BillingOut:
    found = await account.overview(session, settings, caller)
    state = found.account
    return BillingOut(
        clinic_id=state.tenant_id,
        plan=found.plan,
        status=state.status,
        read_only=found.read_only,
        subscribed=state.stripe_subscription_id is not None,
        trial_ends_at=state.trial_ends_at,
        current_period_end=state.current_period_end,
        cancel_at_period_end=state.cancel_at_period_end,
        past_due_since=state.past_due_since,
        grace_ends_at=found.grace_ends_at,
        trial_will_end_at=state.trial_will_end_at,
        entitlements=EntitlementsOut.model_validate(entitlements(found.plan), from_attributes=True),
    )


@router.post("/checkout", responses=STRIPE_CALL, summary="Start paying: a Stripe Checkout URL")
async def checkout(
    body: CheckoutIn,
    caller: Manager,
    session: DbSession,
    settings: AppSettings,
    stripe: StripeClient,
) -> RedirectOut:
    return RedirectOut(url=await account.checkout(session, settings, stripe, caller, body.plan))


@router.post(
    "/portal", responses=STRIPE_CALL, summary="Manage the subscription: a Customer Portal URL"
)
async def portal(
    caller: Manager, session: DbSession, settings: AppSettings, stripe: StripeClient
) -> RedirectOut:
    return RedirectOut(url=await account.portal(session, settings, stripe, caller))


@router.post(
    WEBHOOK_PATH.removeprefix(router.prefix),
    responses=responses(BadRequest),
    summary="Stripe's events (signed with the endpoint secret)",
    openapi_extra={"security": []},
)
async def stripe_webhook(
    request: Request,
    session: DbSession,
    settings: AppSettings,
    quotas: AppQuotas,
    # t=... and one v1=... per active secret: a few hundred characters.
    stripe_signature: Annotated[str | None, Header(max_length=4096)] = None,
) -> WebhookReceipt:
    payload = await request.body()
    try:
        event = intake.verify(payload, stripe_signature, settings.stripe_webhook_secrets)
    except BadRequest as exc:
        # Forgeries spend the sender's anonymous quota, as failed log-ins do (a 429 once it is
        # spent, before any event: a flood is the limiter's to count); Stripe's own deliveries
        # are never limited.
        await spend(request, quotas.anonymous, client_ip(request))
        if isinstance(exc, intake.SignatureRefused):
            security_event(
                SecurityEvent.webhook_signature_refused,
                outcome="refused",
                client_ip=client_ip(request),
            )
        raise
    fresh = await intake.receive(session, event)
    return WebhookReceipt(received=True, duplicate=not fresh)
