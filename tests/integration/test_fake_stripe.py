"""The fake Stripe API, driven by the real stripe SDK: what the billing code will see from it
(objects, errors, idempotent replays, retries) is what Stripe's own client makes of it.

No database: the fake is a local HTTP server, started once for the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode
from stripe._http_client import HTTPClient

from tests.harness.stripe.events import checkout_session, event, invoice, official, subscription
from tests.harness.stripe.forms import decode_form
from tests.harness.stripe.server import FakeStripe, fake_stripe
from tests.harness.stripe.signing import sign, sign_many

# pragma: allowlist nextline secret - the fake accepts any key with Stripe's test prefix
API_KEY = "sk_test_fake"
# pragma: allowlist nextline secret - a made-up webhook signing secret for these tests
WEBHOOK_SECRET = "whsec_test_fake"
TIMEOUT = 0.5  # seconds; the stall test waits for it (times the SDK's 1 + 2 retries)

# httpx deprecates `data=<str>` (it wants `content=`), and stripe's HTTPXClient passes the
# form-encoded body that way: a warning about the SDK's code, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeStripe]:
    with fake_stripe() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> FakeStripe:
    server.reset()
    # The SDK sleeps 0.5 s and up between retries (HTTPClient.INITIAL_DELAY, also its floor),
    # with no per-client setting: shorten it so retry tests stay fast.
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.01)
    return server


@pytest.fixture
async def client(fake: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    # One HTTPXClient serves both the sync methods (allow_sync_methods) and the `_async` ones.
    http = stripe.HTTPXClient(timeout=TIMEOUT, allow_sync_methods=True)
    yield stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake.base_url},
        max_network_retries=2,
        http_client=http,
    )
    http.close()  # type: ignore[no-untyped-call]  # unannotated in the SDK
    await http.close_async()  # type: ignore[no-untyped-call]


def test_a_created_customer_round_trips_its_metadata(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    created = client.v1.customers.create(
        params={"email": "vet@example.com", "metadata": {"clinic_id": "c-1"}}
    )
    fetched = client.v1.customers.retrieve(created.id)
    assert created.id.startswith("cus_")
    assert fetched.id == created.id
    assert fetched.email == "vet@example.com"
    assert fetched.metadata is not None
    assert fetched.metadata["clinic_id"] == "c-1"
    # Stripe's example object, so fields the request did not set are there too.
    assert set(official("customer")) <= set(fetched.to_dict())
    [post] = fake.calls("POST", "/v1/customers")
    assert post.params == {"email": "vet@example.com", "metadata": {"clinic_id": "c-1"}}
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.idempotency_key  # the SDK sends one with every POST


async def test_checkout_params_are_recorded_decoded(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = await client.v1.customers.create_async(params={"name": "Clinic"})
    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "subscription",
            "customer": customer.id,
            "client_reference_id": "c-1",
            "line_items": [{"price": "price_basic", "quantity": 1}],
            "subscription_data": {"metadata": {"clinic_id": "c-1"}},
            "success_url": "https://app.example/billing/done",
            "cancel_url": "https://app.example/billing",
            "expand": ["subscription"],
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"{fake.base_url}/checkout/{session.id}"
    assert (session.status, session.mode, session.customer) == ("open", "subscription", customer.id)
    stored = fake.checkout_sessions[session.id].params
    assert stored["line_items"] == [{"price": "price_basic", "quantity": "1"}]
    assert stored["subscription_data"] == {"metadata": {"clinic_id": "c-1"}}
    assert stored["expand"] == ["subscription"]
    assert fake.calls("POST", "/v1/checkout/sessions")[0].params == stored


async def test_a_portal_session_needs_a_known_customer(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = await client.v1.customers.create_async()
    portal = await client.v1.billing_portal.sessions.create_async(
        params={"customer": customer.id, "return_url": "https://app.example/billing"}
    )
    assert portal.id.startswith("bps_")
    assert portal.url == f"{fake.base_url}/portal/{portal.id}"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.billing_portal.sessions.create_async(params={"customer": "cus_nobody"})
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


def test_an_idempotency_key_replays_the_first_answer(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "signup-c-1"}
    first = client.v1.customers.create(params={"email": "a@example.com"}, options=options)
    again = client.v1.customers.create(params={"email": "a@example.com"}, options=options)
    assert again.id == first.id
    assert len(fake.customers) == 1
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "b@example.com"}, options=options)
    assert len(fake.customers) == 1


def test_a_500_is_retried_with_the_same_key(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.fail_next(1, 500, path_prefix="/v1/customers")
    customer = client.v1.customers.create(params={"email": "a@example.com"})
    attempts = fake.calls("POST", "/v1/customers")
    assert len(attempts) == 2
    assert attempts[0].idempotency_key == attempts[1].idempotency_key is not None
    assert list(fake.customers) == [customer.id]


def test_a_429_is_retried_when_stripe_says_so(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    # stripe-python 16.1 retries connection errors, 409s and 5xx by itself; a 429 only with
    # `Stripe-Should-Retry: true` (as Stripe sends for lock timeouts).
    fake.fail_next(2, 429, should_retry=True)
    customer = client.v1.customers.create()
    assert len(fake.calls("POST", "/v1/customers")) == 3
    assert list(fake.customers) == [customer.id]


def test_a_bare_429_reaches_the_caller_at_once(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(1, 429)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.create()
    assert len(fake.calls("POST", "/v1/customers")) == 1


def test_past_the_retries_the_error_reaches_the_caller(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.fail_next(3, 503)
    with pytest.raises(stripe.APIError):
        client.v1.customers.create()
    assert len(fake.calls("POST", "/v1/customers")) == 3  # 1 + max_network_retries
    fake.fail_next(1, 500, should_retry=False)  # Stripe-Should-Retry: false is obeyed
    with pytest.raises(stripe.APIError):
        client.v1.customers.create()
    assert len(fake.calls("POST", "/v1/customers")) == 4
    assert fake.customers == {}


def test_a_stall_past_the_timeout_is_a_connection_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.stall_next(3, seconds=TIMEOUT + 0.5, processed=False)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.subscriptions.retrieve("sub_slow")
    assert len(fake.calls("GET", "/v1/subscriptions")) == 3  # the SDK tried 1 + 2 times
    assert time.monotonic() - started < 3 * TIMEOUT + 1


def test_a_stalled_request_still_runs_and_its_retry_replays(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    fake.stall_next(1, seconds=TIMEOUT + 0.2)
    customer = client.v1.customers.create(params={"name": "Slow"})
    time.sleep(0.4)  # the stalled first attempt wakes and runs: it finds the saved result
    assert list(fake.customers) == [customer.id]


def test_a_dropped_connection_is_retried(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.drop_next(1, processed=True)  # Stripe made the customer; the answer was lost
    customer = client.v1.customers.create(params={"name": "Lost answer"})
    assert len(fake.calls("POST", "/v1/customers")) == 2
    assert list(fake.customers) == [customer.id]


def test_an_unknown_subscription_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.retrieve("sub_nobody")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"


def test_a_put_subscription_is_served(fake: FakeStripe, client: stripe.StripeClient) -> None:
    sub = fake.put_subscription(
        subscription(customer="cus_1", status="active", price="price_basic", clinic_id="c-1")
    )
    fetched = client.v1.subscriptions.retrieve(sub["id"])
    assert fetched.metadata["clinic_id"] == "c-1"
    assert fetched["items"].data[0].price.id == "price_basic"
    assert (
        fetched["items"].data[0].current_period_end == sub["items"]["data"][0]["current_period_end"]
    )


def test_a_request_without_a_test_key_is_refused(fake: FakeStripe) -> None:
    http = stripe.HTTPXClient(timeout=TIMEOUT, allow_sync_methods=True)
    # pragma: allowlist nextline secret - a live-looking key the fake must refuse
    other = stripe.StripeClient(
        "sk_live_nope", base_addresses={"api": fake.base_url}, http_client=http
    )
    with pytest.raises(stripe.AuthenticationError):
        other.v1.customers.create()
    http.close()  # type: ignore[no-untyped-call]  # unannotated in the SDK
    assert fake.customers == {}


def test_builders_set_what_this_api_version_reads() -> None:
    sub = subscription(
        customer="cus_1", status="trialing", price="price_x", trial_end=2_000_000_000
    )
    assert "current_period_end" not in sub  # per item since basil
    assert sub["items"]["data"][0]["current_period_end"] > sub["created"]
    assert (sub["trial_end"], sub["cancel_at"], sub["metadata"]) == (2_000_000_000, None, {})
    inv = invoice(customer="cus_1", subscription=sub["id"], status="paid")
    assert inv["parent"]["type"] == "subscription_details"
    assert inv["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert inv["amount_remaining"] == 0
    session = checkout_session(customer="cus_1", subscription=sub["id"], client_reference_id="c")
    assert (session["status"], session["payment_status"], session["url"]) == (
        "complete",
        "paid",
        None,
    )


def test_a_signed_event_verifies_with_the_sdk() -> None:
    sub = subscription(customer="cus_1", status="past_due", price="price_x")
    evt = event("customer.subscription.updated", sub)
    payload = json.dumps(evt).encode()
    verified = stripe.Webhook.construct_event(
        payload, sign(payload, WEBHOOK_SECRET), WEBHOOK_SECRET
    )
    assert verified.id == evt["id"]
    assert verified.type == "customer.subscription.updated"
    assert verified.data.object.status == "past_due"
    # While a secret is rolled Stripe signs with both: either secret verifies.
    rolled = sign_many(payload, ["whsec_old", WEBHOOK_SECRET])
    assert stripe.Webhook.construct_event(payload, rolled, WEBHOOK_SECRET).id == evt["id"]
    # The SDK's own signer (for tests) agrees, byte for byte.
    expected = stripe.WebhookSignature.generate_signature_header(
        payload.decode(), WEBHOOK_SECRET, 1_700_000_000
    )
    assert sign(payload, WEBHOOK_SECRET, 1_700_000_000) == expected
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, sign(payload, "whsec_wrong"), WEBHOOK_SECRET)


def _wire(value: Any, *, in_list: bool = False) -> Any:
    """What a value reads as after the form round trip: strings, bools as the SDK writes them.

    A quirk of stripe-python's encoder: a scalar directly in a list is written with str()
    (so True is "True"); a hash value is lower-cased ("true"). A list in a list is encoded as a
    hash of its items, so its own items are hash values again."""
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wire(item, in_list=not in_list) for item in value]
    if isinstance(value, bool) and not in_list:
        return str(value).lower()
    return str(value)


_keys = st.text("abcdefgxyz_", min_size=1, max_size=8)  # never all digits: hash keys
_leaves = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=12),
    st.integers(),
    st.booleans(),
)
# Non-empty containers only: the SDK writes nothing at all for an empty list or hash.
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(_keys, inner, min_size=1, max_size=3),
    ),
    max_leaves=10,
)


@given(st.dictionaries(_keys, _values, max_size=4))
def test_decode_form_reads_what_the_sdk_encodes(params: dict[str, Any]) -> None:
    # Exactly the SDK's body: its encoder, then its literal brackets (_api_requestor does this).
    body = urlencode(list(_api_encode(params))).replace("%5B", "[").replace("%5D", "]")
    assert decode_form(body) == _wire(params)


def test_decode_form_reads_stripe_notation() -> None:
    body = (
        "metadata[clinic_id]=c-1&line_items[0][price]=p&line_items[0][quantity]=2"
        "&line_items[1][price]=q&subscription_data[metadata][clinic_id]=c-1"
        "&expand[]=a&expand[]=b&email=&description=a+b%26c"
    )
    assert decode_form(body) == {
        "metadata": {"clinic_id": "c-1"},
        "line_items": [{"price": "p", "quantity": "2"}, {"price": "q"}],
        "subscription_data": {"metadata": {"clinic_id": "c-1"}},
        "expand": ["a", "b"],
        "email": "",
        "description": "a b&c",
    }
