"""The calls billing makes to Stripe, through the official SDK.

Every call has the configured timeout and the SDK's network retries (which back off and honour
``Stripe-Should-Retry``), and an idempotency key derived from what the call does: a retried
request, ours or the SDK's, never makes a second customer or session.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import stripe

from app.kit.problems import Problem, ServiceUnavailable
from app.settings import Settings


class BillingUnavailable(ServiceUnavailable):
    slug, title = "billing-unavailable", "Billing unavailable"


class BillingRefused(Problem):
    """Stripe refused what billing asked (a price or customer that does not exist there): a
    configuration to fix, not something the caller can change."""

    status, slug, title = 502, "billing-refused", "Stripe refused the request"


class BillingNotConfigured(ServiceUnavailable):
    slug, title = "billing-not-configured", "Billing is not configured"


def idempotency_key(action: str, **what: Any) -> str:
    """The same action on the same things gives the same key (Stripe keeps keys 24 hours)."""
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
    return f"vetify-{action}-{digest[:40]}"


class Stripe:
    def __init__(self, settings: Settings):
        if settings.stripe_api_key is None:
            raise BillingNotConfigured("Set VETIFY_STRIPE_API_KEY to take payments.")
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_seconds)
        self.client = stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={"api": settings.stripe_api_base},
            max_network_retries=settings.stripe_max_network_retries,
            http_client=self._http,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create_customer(self, clinic_id: uuid.UUID, name: str, email: str) -> str:
        params: dict[str, Any] = {
            "name": name,
            "email": email,
            "metadata": {"clinic_id": str(clinic_id)},
        }
        customer = await self._call(
            self.client.v1.customers.create_async,
            params,
            idempotency_key("customer", clinic=clinic_id),
        )
        return str(customer.id)

    async def create_checkout_session(
        self,
        *,
        clinic_id: uuid.UUID,
        customer: str,
        price: str,
        trial_end: int | None,
        success_url: str,
        cancel_url: str,
    ) -> str:
        subscription_data: dict[str, Any] = {"metadata": {"clinic_id": str(clinic_id)}}
        if trial_end is not None:
            subscription_data["trial_end"] = trial_end
        params: dict[str, Any] = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": str(clinic_id),
            "line_items": [{"price": price, "quantity": 1}],
            "subscription_data": subscription_data,
            "metadata": {"clinic_id": str(clinic_id)},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        session = await self._call(
            self.client.v1.checkout.sessions.create_async,
            params,
            idempotency_key("checkout", **params),
        )
        return str(session.url)

    async def create_portal_session(self, *, customer: str, return_url: str, window: int) -> str:
        """``window``: a portal link lives minutes; asks within one window share one session."""
        params: dict[str, Any] = {"customer": customer, "return_url": return_url}
        session = await self._call(
            self.client.v1.billing_portal.sessions.create_async,
            params,
            idempotency_key("portal", window=window, **params),
        )
        return str(session.url)

    async def subscription(self, subscription_id: str) -> dict[str, Any]:
        found = await self._call(self.client.v1.subscriptions.retrieve_async, subscription_id)
        return _plain(found)

    async def customer(self, customer_id: str) -> dict[str, Any]:
        found = await self._call(self.client.v1.customers.retrieve_async, customer_id)
        return _plain(found)

    async def _call(self, method: Any, argument: Any, key: str | None = None) -> Any:
        try:
            if key is None:
                return await method(argument)
            return await method(params=argument, options={"idempotency_key": key})
        except stripe.APIConnectionError as exc:
            raise BillingUnavailable("Stripe could not be reached; try again shortly.") from exc
        except (stripe.RateLimitError, stripe.APIError) as exc:
            raise BillingUnavailable("Stripe is not answering as it should; try again.") from exc
        except stripe.StripeError as exc:
            # Stripe's own words (never the key); an operator matches them to its request log.
            raise BillingRefused(f"Stripe: {exc.user_message or exc.code or 'refused'}") from exc


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as the JSON Stripe sent: handlers read one shape, the wire's, whether an
    object came in a webhook or from a retrieve."""
    return dict(obj.to_dict())


PROBE_CUSTOMER = "cus_vetifyhealthprobe"
"""A customer no account has: Stripe answers its lookup 404 once it has accepted the key."""


async def probe(settings: Settings) -> str:
    """Stripe answers, and takes the configured key (for the dependency report): a lookup that
    finds nothing, so it changes nothing and costs no object."""
    client = Stripe(settings)
    try:
        await client.client.v1.customers.retrieve_async(PROBE_CUSTOMER)
    except stripe.InvalidRequestError as exc:
        if exc.http_status != 404:  # a 400 or 429: Stripe refuses what we send
            raise
    finally:
        await client.close()
    return "the key is accepted"
