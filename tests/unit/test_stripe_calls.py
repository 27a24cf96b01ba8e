"""What billing asks Stripe (`app.billing.stripe_api.Stripe`), at the SDK's methods: each call's
parameters, its idempotency key (the same request the same key, another request another), its
answer, and Stripe's refusals in words. The SDK's own wire format against the fake Stripe is
tests/integration/test_billing.py's and test_stripe_client.py's."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import stripe as stripe_sdk

from app.billing.stripe_api import BillingNotConfigured, BillingRefused, Stripe
from app.settings import Settings
from tests.harness import canary

CLINIC = uuid.UUID("3f0c9d5e-8b7a-4c6d-9e1f-2a3b4c5d6e7f")
OTHER = uuid.UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
SETTINGS = Settings(_env_file=None, stripe_api_key=canary.STRIPE_KEY)
KEY = re.compile(r"vetify-(customer|checkout|portal)-[0-9a-f]{40}")


class Method:
    """An SDK create method: records each call's params and options, answers ``answer``."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def __call__(self, *, params: dict[str, Any], options: dict[str, Any]) -> Any:
        self.calls.append((params, options))
        if isinstance(self.answer, Exception):
            raise self.answer
        return SimpleNamespace(**self.answer)

    def keys(self) -> list[str]:
        return [options["idempotency_key"] for _, options in self.calls]


@pytest.fixture
async def client() -> Any:
    made = Stripe(SETTINGS)
    yield made
    await made.close()


def patch(client: Stripe, service: Any, answer: dict[str, Any] | Exception) -> Method:
    method = Method(answer)
    service.create_async = method
    return method


def action(key: str) -> str:
    found = KEY.fullmatch(key)
    assert found is not None, key
    return found[1]


async def test_a_customer_is_the_clinic_named_with_its_owners_email(client: Stripe) -> None:
    method = patch(client, client.client.v1.customers, {"id": "cus_1"})
    assert await client.create_customer(CLINIC, "Harbour Vets", "rita@harbour.example") == "cus_1"
    await client.create_customer(CLINIC, "Harbour Vets", "rita@harbour.example")
    await client.create_customer(OTHER, "Hill Vets", "hugo@hill.example")
    assert method.calls[0][0] == {
        "name": "Harbour Vets",
        "email": "rita@harbour.example",
        "metadata": {"clinic_id": str(CLINIC)},
    }
    first, again, other = method.keys()
    # A retry for the clinic is one customer at Stripe; another clinic's is another customer.
    assert action(first) == "customer"
    assert first == again != other


async def test_a_checkout_asks_for_the_price_as_a_subscription_of_the_clinic(
    client: Stripe,
) -> None:
    method = patch(client, client.client.v1.checkout.sessions, {"url": "https://pay/cs_1"})
    asked: dict[str, Any] = {
        "clinic_id": CLINIC,
        "customer": "cus_1",
        "price": "price_1",
        "trial_end": 1_900_000_000,
        "success_url": "https://app.example/billing?checkout=done",
        "cancel_url": "https://app.example/billing?checkout=cancelled",
    }
    assert await client.create_checkout_session(**asked) == "https://pay/cs_1"
    await client.create_checkout_session(**asked)
    await client.create_checkout_session(**(asked | {"price": "price_2"}))
    await client.create_checkout_session(**(asked | {"trial_end": None}))
    assert method.calls[0][0] == {
        "mode": "subscription",
        "customer": "cus_1",
        "client_reference_id": str(CLINIC),
        "line_items": [{"price": "price_1", "quantity": 1}],
        "subscription_data": {"metadata": {"clinic_id": str(CLINIC)}, "trial_end": 1_900_000_000},
        "metadata": {"clinic_id": str(CLINIC)},
        "success_url": "https://app.example/billing?checkout=done",
        "cancel_url": "https://app.example/billing?checkout=cancelled",
    }
    assert method.calls[3][0]["subscription_data"] == {"metadata": {"clinic_id": str(CLINIC)}}
    first, again, other_price, no_trial = method.keys()
    assert action(first) == "checkout"
    assert first == again
    assert len({first, other_price, no_trial}) == 3


async def test_a_portal_session_is_shared_within_a_window_only(client: Stripe) -> None:
    method = patch(client, client.client.v1.billing_portal.sessions, {"url": "https://portal/1"})
    back = "https://app.example/billing"
    url = await client.create_portal_session(customer="cus_1", return_url=back, window=7)
    assert url == "https://portal/1"
    await client.create_portal_session(customer="cus_1", return_url=back, window=7)
    await client.create_portal_session(customer="cus_1", return_url=back, window=8)
    await client.create_portal_session(customer="cus_2", return_url=back, window=7)
    assert method.calls[0][0] == {"customer": "cus_1", "return_url": back}
    first, again, next_window, other_customer = method.keys()
    assert action(first) == "portal"
    assert first == again
    assert len({first, next_window, other_customer}) == 3


@pytest.mark.parametrize(
    ("message", "code", "detail"),
    [
        ("No such price: 'price_1'", "resource_missing", "Stripe: No such price: 'price_1'"),
        (None, "resource_missing", "Stripe: resource_missing"),
        (None, None, "Stripe: refused"),
    ],
)
async def test_stripes_refusal_is_told_in_its_own_words(
    client: Stripe, message: str | None, code: str | None, detail: str
) -> None:
    refusal = stripe_sdk.InvalidRequestError(message, "price", code=code)
    patch(client, client.client.v1.customers, refusal)
    with pytest.raises(BillingRefused) as refused:
        await client.create_customer(CLINIC, "Harbour Vets", "rita@harbour.example")
    assert refused.value.detail == detail


def test_without_an_api_key_billing_says_what_to_set() -> None:
    with pytest.raises(BillingNotConfigured) as refused:
        Stripe(Settings(_env_file=None, stripe_api_key=None))
    assert refused.value.detail == "Set VETIFY_STRIPE_API_KEY to take payments."
