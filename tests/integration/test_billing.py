"""Billing through the API against the fake Stripe: the payment flow end to end, checkout and
portal calls (what is sent, idempotency, Stripe failing), read-only mode on every write route,
webhook duplicates, and events that keep failing (visible, then replayed)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import uuid

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import text

from app.auth.models import Role
from app.billing import operations
from app.billing.jobs import RETRIES
from app.billing.plans import Plan, entitlements
from app.kit.csrf import SAFE_METHODS
from tests.harness import api
from tests.harness.billing import BILLING, PRICES, billing, deliver, drain, event_row, stored
from tests.harness.mail import VERIFICATION, mailed_token
from tests.harness.plugin import asgi_client
from tests.harness.queue import due_now
from tests.harness.stripe import events as fake

# pragma: allowlist nextline secret - the test clinic owner's made-up password
PASSWORD = "a long passphrase for rita"
CUSTOMER = {"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"}


async def _write(client, actor):
    return await client.post("/api/v1/customers", json=CUSTOMER, headers=actor.headers)


async def _checkout(client, stripe, actor, plan: Plan = Plan.professional) -> str:
    """Check out and return the Stripe customer billing made for the clinic."""
    response = await client.post(f"{BILLING}/checkout", json={"plan": plan}, headers=actor.headers)
    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith(stripe.base_url + "/checkout/")
    [customer] = stripe.customers  # one clinic per test: one customer
    return customer


def _sub(
    clinic_id, *, customer: str | None = None, status: str = "active", plan=Plan.starter, **more
) -> dict:
    """A subscription of the clinic (metadata names it) to ``plan``, as Stripe holds it."""
    return fake.subscription(
        customer=customer or fake.new_id("cus_"),
        status=status,
        price=PRICES[plan],
        clinic_id=str(clinic_id),
        **more,
    )


async def _sql(engine, statement: str, **params) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement), params)


async def _stripe_sends(client, settings, *events) -> None:
    for event in events:
        response = await deliver(client, event)
        assert response.status_code == 200, response.text
    await drain(settings)


async def test_payment_flow_from_trial_to_paid_to_lapsed_and_back(
    client, settings, stripe, superuser_engine, mailbox
) -> None:
    created = await api.signup(client, email="rita@harbour.example", password=PASSWORD)
    assert created.status_code == 201, created.text
    clinic_id = created.json()["clinic"]["id"]
    logged_in = await api.login(client, "rita@harbour.example", PASSWORD)
    assert logged_in.status_code == 200, logged_in.text
    # Paying waits for a verified address (ADR 0013).
    link = await mailed_token(settings, mailbox, "rita@harbour.example", VERIFICATION)
    verified = await client.post("/api/v1/auth/verify-email", json={"token": link})
    assert verified.status_code == 200, verified.text
    token = await client.post("/api/v1/auth/tokens", json={"name": "billing test"})
    assert token.status_code == 201, token.text
    client.cookies.clear()  # from here on the token alone speaks for the owner
    owner = _Bearer(token.json()["token"])

    # A trial without a card: writable, on the default plan.
    state = await billing(client, owner)
    assert (state["status"], state["subscribed"], state["read_only"]) == ("trialing", False, False)
    assert state["plan"] == "starter"
    trial_end = dt.datetime.fromisoformat(state["trial_ends_at"])
    assert (
        dt.timedelta(days=13, hours=23)
        < trial_end - dt.datetime.now(dt.UTC)
        <= dt.timedelta(days=14)
    )

    customer = await _checkout(client, stripe, owner)
    sent = stripe.calls("POST", "/v1/checkout/sessions")[-1].params
    assert sent["mode"] == "subscription"
    assert sent["customer"] == customer
    assert sent["client_reference_id"] == clinic_id
    assert sent["line_items"] == [{"price": PRICES[Plan.professional], "quantity": "1"}]
    # The trial carries over: Stripe charges nothing before the day the clinic was promised.
    assert int(sent["subscription_data"]["trial_end"]) == int(trial_end.timestamp())
    assert sent["subscription_data"]["metadata"] == {"clinic_id": clinic_id}

    # Stripe: the checkout completed, the subscription exists and is paid.
    sub = _sub(clinic_id, customer=customer, plan=Plan.professional)
    stripe.put_subscription(sub)
    session = fake.checkout_session(
        customer=customer, subscription=sub["id"], client_reference_id=clinic_id
    )
    await _stripe_sends(
        client,
        settings,
        fake.event("checkout.session.completed", session),
        fake.event("customer.subscription.created", sub),
    )
    state = await billing(client, owner)
    assert (state["status"], state["plan"], state["read_only"]) == ("active", "professional", False)
    expected = entitlements(Plan.professional)
    assert state["entitlements"]["staff_seats"] == expected.staff_seats
    assert state["entitlements"]["api_requests_per_minute"] == expected.api_requests_per_minute
    period_end = sub["items"]["data"][0]["current_period_end"]
    assert dt.datetime.fromisoformat(state["current_period_end"]).timestamp() == period_end

    # A payment fails: past due, still writable during the grace period.
    stripe.put_subscription({**sub, "status": "past_due"})
    failed = fake.invoice(customer=customer, subscription=sub["id"], status="open")
    await _stripe_sends(client, settings, fake.event("invoice.payment_failed", failed))
    state = await billing(client, owner)
    assert (state["status"], state["read_only"]) == ("past_due", False)
    assert state["grace_ends_at"] is not None
    assert (await _write(client, owner)).status_code == 201

    # The grace period passes (the clock moved on: the account's first sight of past-due is
    # back-dated beyond it): read-only. Writes are 402 with the way to billing, reads work.
    await _sql(
        superuser_engine,
        "UPDATE billing_accounts SET past_due_since = now() - make_interval(days => :days)"
        " WHERE tenant_id = :clinic",
        days=settings.billing_grace_days + 1,
        clinic=uuid.UUID(clinic_id),
    )
    refused = await _write(client, owner)
    api.assert_problem(refused, 402, "payment-required")
    assert refused.headers["link"] == f'<{BILLING}>; rel="payment"'
    export = await client.get("/api/v1/customers", headers=owner.headers)
    assert export.status_code == 200
    assert [c["email"] for c in export.json()["items"]] == [CUSTOMER["email"]]
    assert (await billing(client, owner))["read_only"] is True

    # Paid again: writable at once.
    stripe.put_subscription(sub)
    paid = fake.invoice(customer=customer, subscription=sub["id"], status="paid")
    await _stripe_sends(client, settings, fake.event("invoice.paid", paid))
    state = await billing(client, owner)
    assert (state["status"], state["read_only"], state["past_due_since"]) == ("active", False, None)
    assert (await _write(client, owner)).status_code == 201


class _Bearer:
    def __init__(self, token: str) -> None:
        self.headers = {"Authorization": f"Bearer {token}"}


# -- checkout and portal ------------------------------------------------------------------------
async def test_checkout_retried_makes_one_customer_and_one_session(client, world, stripe) -> None:
    clinic = await world.clinic((Role.owner,))
    first = await client.post(
        f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
    )
    stripe.fail_next(count=1, status=500, path_prefix="/v1/customers")
    # The first request's customer was never saved (say its transaction was lost): the retry
    # asks Stripe again with the same idempotency key, and gets the same customer back.
    await _sql_reset_customer(world, clinic.id)
    second = await client.post(
        f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
    )
    assert first.status_code == second.status_code == 200, second.text
    assert first.json() == second.json()
    # Three customer calls (first; the 500; the SDK's retry) and two session calls, one key
    # each: Stripe made one customer and one session.
    customers = stripe.calls("POST", "/v1/customers")
    assert len(customers) == 3
    assert len({call.idempotency_key for call in customers} - {None}) == 1
    sessions = stripe.calls("POST", "/v1/checkout/sessions")
    assert len({call.idempotency_key for call in sessions} - {None}) == 1
    assert len(stripe.customers) == len(stripe.checkout_sessions) == 1
    assert sessions[-1].params["customer"] == next(iter(stripe.customers))


async def _sql_reset_customer(world, clinic_id: uuid.UUID) -> None:
    async with world.session(clinic_id) as session:
        await session.execute(text("UPDATE billing_accounts SET stripe_customer_id = NULL"))


async def test_stripe_down_is_a_503_and_changes_nothing(client, world, stripe) -> None:
    clinic = await world.clinic((Role.owner,))
    # More failures than the SDK's retries (one in tests).
    stripe.fail_next(count=5, status=503, path_prefix="/v1/customers")
    response = await client.post(
        f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
    )
    # Stripe answered, wrongly: said apart from Stripe out of reach (below).
    assert api.assert_problem(response, 503, "billing-unavailable")["detail"] == (
        "Stripe is not answering as it should; try again."
    )
    assert "retry-after" in response.headers
    assert len(stripe.calls("POST", "/v1/customers")) == 2  # the call and the SDK's one retry
    async with world.session(clinic.id) as session:
        stored = await session.scalar(text("SELECT stripe_customer_id FROM billing_accounts"))
    assert stored is None


async def test_stripe_timing_out_is_a_503(configured_app, world, stripe) -> None:
    clinic = await world.clinic((Role.owner,))
    stripe.stall_next(count=5, seconds=3, path_prefix="/v1/customers")
    async with configured_app(stripe_timeout_seconds=0.5) as app, asgi_client(app) as client:
        response = await client.post(
            f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
        )
    # The call and the SDK's one retry, each given up after the timeout.
    assert len(stripe.calls("POST", "/v1/customers")) == 2
    assert api.assert_problem(response, 503, "billing-unavailable")["detail"] == (
        "Stripe could not be reached; try again shortly."
    )


async def test_only_owner_and_admin_use_billing(client, world, stripe) -> None:
    clinic = await world.clinic()
    for role, actor in clinic.actors.items():
        allowed = role in (Role.owner, Role.admin)
        for method, path, body in (
            ("GET", BILLING, None),
            ("POST", f"{BILLING}/checkout", {"plan": "starter"}),
            ("POST", f"{BILLING}/portal", None),
        ):
            response = await client.request(method, path, json=body, headers=actor.headers)
            if allowed:
                assert response.status_code in (200, 409), (role, path, response.text)
            else:
                assert response.status_code == 403, (role, path, response.text)


async def test_plan_without_a_price_is_refused(configured_app, world, stripe) -> None:
    clinic = await world.clinic((Role.owner,))
    async with configured_app(stripe_price_enterprise=None) as app, asgi_client(app) as client:
        response = await client.post(
            f"{BILLING}/checkout", json={"plan": "enterprise"}, headers=clinic.owner.headers
        )
    assert response.status_code == 422, response.text
    assert stripe.calls("POST", "/v1/") == []


async def test_a_subscribed_clinic_goes_to_the_portal_not_checkout(
    client, settings, world, stripe
) -> None:
    clinic = await world.clinic((Role.owner,))
    none_yet = await client.post(f"{BILLING}/portal", headers=clinic.owner.headers)
    # Each refusal names the other way: it is all a client is told about where to go.
    assert api.assert_problem(none_yet, 409, "conflict")["detail"] == (
        "This clinic has not subscribed yet: start with checkout."
    )
    customer = await _checkout(client, stripe, clinic.owner)
    sub = _sub(clinic.id, customer=customer)
    stripe.put_subscription(sub)
    await _stripe_sends(client, settings, fake.event("customer.subscription.created", sub))
    again = await client.post(
        f"{BILLING}/checkout", json={"plan": "enterprise"}, headers=clinic.owner.headers
    )
    assert api.assert_problem(again, 409, "conflict")["detail"] == (
        "This clinic has a subscription: change it in the billing portal."
    )
    portal = await client.post(f"{BILLING}/portal", headers=clinic.owner.headers)
    assert portal.status_code == 200, portal.text
    sent = stripe.calls("POST", "/v1/billing_portal/sessions")[-1]
    assert sent.params == {"customer": customer, "return_url": f"{settings.public_url}/billing"}
    assert sent.idempotency_key


# -- read-only mode -----------------------------------------------------------------------------
async def test_a_lapsed_trial_refuses_every_write_route_but_billing_and_own_access(
    app, client, world, stripe
) -> None:
    from app.auth.deps import required_action
    from app.auth.permissions import PAYMENT_EXEMPT

    clinic = await world.clinic((Role.owner,))
    async with world.session(clinic.id) as session:
        await session.execute(
            text("UPDATE billing_accounts SET trial_ends_at = now() - interval '1 minute'")
        )
    checked = 0
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        action = required_action(dependant) if dependant is not None else None
        if action is None or action in PAYMENT_EXEMPT:
            continue
        for method in route.methods - SAFE_METHODS:
            path = route.path_format
            for name in route.param_convertors:
                path = path.replace("{" + name + "}", str(uuid.uuid4()))
            response = await client.request(method, path, json={}, headers=clinic.owner.headers)
            assert response.status_code == 402, (method, path, response.text)
            checked += 1
    assert checked >= 20
    reads = await client.get("/api/v1/customers", headers=clinic.owner.headers)
    assert reads.status_code == 200
    # Paying is a write the read-only clinic must still make.
    pay = await client.post(
        f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
    )
    assert pay.status_code == 200, pay.text


# -- webhook deliveries -------------------------------------------------------------------------
async def _events(engine) -> list[tuple[str, str, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT id, status, attempts FROM stripe_events ORDER BY received_at")
        )
        return [tuple(row) for row in rows]


async def test_a_duplicate_delivery_is_acknowledged_and_applied_once(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    customer = fake.new_id("cus_")
    sub = _sub(clinic.id, customer=customer)
    stripe.put_subscription(sub)
    event = fake.event("customer.subscription.created", sub)
    first, second = await deliver(client, event), await deliver(client, event)
    assert first.json() == {"received": True, "duplicate": False}
    assert second.json() == {"received": True, "duplicate": True}
    assert (await stored(superuser_engine))[1] == 1
    # Two deliveries racing: one row, one job.
    racing = fake.event("customer.subscription.updated", sub)
    answers = await asyncio.gather(deliver(client, racing), deliver(client, racing))
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True]
    assert (await stored(superuser_engine))[1] == 2
    await drain(settings)
    assert [(s, n) for _, s, n in await _events(superuser_engine)] == [("processed", 1)] * 2
    assert len(stripe.calls("GET", f"/v1/subscriptions/{sub['id']}")) == 2


async def test_a_failing_event_retries_shows_itself_and_can_be_replayed(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    customer = "cus_" + uuid.uuid4().hex[:14]
    sub = _sub(clinic.id, customer=customer, plan=Plan.enterprise)
    # Stripe answers the retrieve with errors: the job fails, its retry is scheduled.
    stripe.fail_next(count=50, status=500, path_prefix=f"/v1/subscriptions/{sub['id']}")
    event = fake.event("customer.subscription.created", sub)
    await _stripe_sends(client, settings, event)
    [(event_id, status, attempts)] = await _events(superuser_engine)
    assert (event_id, status, attempts) == (event["id"], "retrying", 1)
    args = argparse.Namespace(billing_command="events", status="retrying", limit=10)
    listed = await operations.run(settings, args)
    assert event["id"] in listed
    assert "BillingUnavailable" in listed
    metrics = await operations.run(settings, argparse.Namespace(billing_command="metrics"))
    assert 'vetify_stripe_events{status="retrying"} 1' in metrics
    assert (await billing(client, clinic.owner))["status"] == "trialing"

    # Stripe recovers; the operator replays the event rather than wait for the backoff.
    stripe.reset()
    stripe.put_subscription(sub)
    replayed = await operations.run(
        settings, argparse.Namespace(billing_command="replay", event_id=event["id"])
    )
    assert "queued again" in replayed
    await drain(settings)
    [(_, status, attempts)] = await _events(superuser_engine)
    assert (status, attempts) == ("processed", 2)
    state = await billing(client, clinic.owner)
    assert (state["status"], state["plan"]) == ("active", "enterprise")

    # The original job's retry comes due after all: the event is done, it changes nothing.
    await due_now(settings)
    await drain(settings)
    [(_, status, attempts)] = await _events(superuser_engine)
    assert (status, attempts) == ("processed", 2)
    assert len(stripe.calls("GET", f"/v1/subscriptions/{sub['id']}")) == 1


async def test_events_billing_does_not_handle_are_stored_and_ignored(
    client, settings, stripe, superuser_engine
) -> None:
    other = fake.official("customer")
    await _stripe_sends(client, settings, fake.event("customer.created", other))
    [(event_id, status, _)] = await _events(superuser_engine)
    assert status == "ignored"
    assert stripe.requests == []
    listed = await operations.run(
        settings, argparse.Namespace(billing_command="events", status=None, limit=5)
    )
    assert event_id in listed
    assert "note: not a type billing handles" in listed


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({"clinic_id": "not-a-uuid"}, "not a Vetify clinic's subscription"),
        ({"clinic_id": "01900000-0000-7000-8000-000000000000"}, "no such clinic"),
    ],
)
async def test_a_subscription_naming_no_clinic_of_ours_is_ignored(
    client, settings, stripe, superuser_engine, metadata, why
) -> None:
    customer = fake.new_id("cus_")
    stripe.put_customer({**fake.official("customer"), "id": customer, "metadata": {}})
    sub = fake.subscription(customer=customer, status="active", price=PRICES[Plan.starter])
    sub["metadata"] = metadata
    event = fake.event("customer.subscription.created", sub)
    await _stripe_sends(client, settings, event)
    assert await _note(superuser_engine, event["id"]) == ("ignored", why)


@pytest.mark.parametrize("method", sorted({"PUT", "PATCH", "DELETE"}))
async def test_the_webhook_takes_only_post(client, method) -> None:
    response = await client.request(method, "/api/v1/billing/webhooks/stripe")
    assert response.status_code == 405


# -- the trial's end, announced -----------------------------------------------------------------
async def test_owners_are_mailed_once_when_stripe_says_the_trial_ends(
    client, settings, world, stripe, mailbox
) -> None:
    clinic = await world.clinic((Role.owner, Role.admin, Role.vet))
    customer = fake.new_id("cus_")
    trial_end = int((dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).timestamp())
    sub = _sub(clinic.id, customer=customer, status="trialing", trial_end=trial_end)
    stripe.put_subscription(sub)
    await _stripe_sends(
        client,
        settings,
        fake.event("customer.subscription.trial_will_end", sub),
        # Stripe sends it again (a new event: not a duplicate delivery): one mail is enough.
        fake.event("customer.subscription.trial_will_end", sub),
    )
    [mail] = mailbox.received()
    assert mail["To"] == clinic.owner.user.email  # owners only: not the admin, not the vet
    assert mail["Subject"] == "Your Vetify trial ends soon"
    ends = dt.datetime.fromtimestamp(trial_end, dt.UTC).strftime("%d %B %Y")
    assert ends in mail.get_content()
    assert f"{settings.public_url}/billing" in mail.get_content()
    state = await billing(client, clinic.owner)
    assert state["trial_will_end_at"] is not None


async def test_a_late_trial_notice_after_the_first_payment_is_not_mailed(
    client, settings, world, stripe, mailbox
) -> None:
    clinic = await world.clinic((Role.owner,))
    sub = _sub(clinic.id)
    stripe.put_subscription(sub)
    trialing = {**sub, "status": "trialing"}
    await _stripe_sends(
        client, settings, fake.event("customer.subscription.trial_will_end", trialing)
    )
    assert mailbox.received() == []
    assert (await billing(client, clinic.owner))["status"] == "active"


# -- events that must not move a clinic ---------------------------------------------------------
async def _subscribed(client, settings, world, stripe) -> tuple:
    """A clinic paying for starter: (clinic, its customer, its subscription)."""
    clinic = await world.clinic((Role.owner,))
    customer = await _checkout(client, stripe, clinic.owner, Plan.starter)
    sub = _sub(clinic.id, customer=customer)
    stripe.put_subscription(sub)
    await _stripe_sends(client, settings, fake.event("customer.subscription.created", sub))
    return clinic, customer, sub


async def _note(engine, event_id: str) -> tuple[str, str | None]:
    row = await event_row(engine, event_id)
    return row["status"], row["note"]


async def test_a_subscription_of_another_customer_cannot_move_the_clinic(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic, _, _ = await _subscribed(client, settings, world, stripe)
    before = await billing(client, clinic.owner)
    # Someone else's subscription claiming this clinic in its metadata (their customer).
    theirs = _sub(clinic.id, status="canceled", plan=Plan.enterprise)
    stripe.put_subscription(theirs)
    event = fake.event("customer.subscription.deleted", theirs)
    await _stripe_sends(client, settings, event)
    assert await _note(superuser_engine, event["id"]) == (
        "ignored",
        "the subscription's customer is not the clinic's",
    )
    assert await billing(client, clinic.owner) == before


async def test_a_checkout_naming_one_clinic_for_a_subscription_of_another_is_refused(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    other = await world.clinic((Role.owner,))
    customer = fake.new_id("cus_")
    sub = _sub(other.id, customer=customer)
    stripe.put_subscription(sub)
    session = fake.checkout_session(
        customer=customer, subscription=sub["id"], client_reference_id=str(clinic.id)
    )
    event = fake.event("checkout.session.completed", session)
    await _stripe_sends(client, settings, event)
    assert await _note(superuser_engine, event["id"]) == (
        "ignored",
        "the subscription names another clinic",
    )
    assert (await billing(client, clinic.owner))["subscribed"] is False


async def test_news_of_an_older_subscription_changes_nothing(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic, customer, sub = await _subscribed(client, settings, world, stripe)
    before = await billing(client, clinic.owner)
    older = _sub(clinic.id, customer=customer, status="canceled", created=sub["created"] - 86_400)
    stripe.put_subscription(older)
    event = fake.event("customer.subscription.deleted", older)
    await _stripe_sends(client, settings, event)
    assert await _note(superuser_engine, event["id"]) == (
        "processed",
        "an older subscription than the clinic's own",
    )
    assert await billing(client, clinic.owner) == before


async def test_a_price_no_plan_has_keeps_the_plan_and_syncs_the_rest(
    client, settings, world, stripe
) -> None:
    clinic, _, sub = await _subscribed(client, settings, world, stripe)
    moved = {**sub, "status": "past_due"}
    moved["items"] = {**sub["items"], "data": [{**sub["items"]["data"][0]}]}
    moved["items"]["data"][0]["price"] = {**moved["items"]["data"][0]["price"], "id": "price_x"}
    stripe.put_subscription(moved)
    await _stripe_sends(client, settings, fake.event("customer.subscription.updated", moved))
    state = await billing(client, clinic.owner)
    assert (state["status"], state["plan"]) == ("past_due", "starter")


async def test_an_invoice_of_no_subscription_is_ignored(
    client, settings, world, stripe, superuser_engine
) -> None:
    one_off = fake.invoice(customer=fake.new_id("cus_"), subscription="sub_x", status="paid")
    one_off["parent"] = None
    event = fake.event("invoice.paid", one_off)
    await _stripe_sends(client, settings, event)
    assert await _note(superuser_engine, event["id"]) == (
        "ignored",
        "not a subscription's invoice",
    )
    assert stripe.requests == []


async def test_without_a_stripe_key_checkout_says_billing_is_not_configured(
    configured_app, world
) -> None:
    clinic = await world.clinic((Role.owner,))
    async with configured_app(stripe_api_key=None) as app, asgi_client(app) as client:
        response = await client.post(
            f"{BILLING}/checkout", json={"plan": "starter"}, headers=clinic.owner.headers
        )
        state = await client.get(BILLING, headers=clinic.owner.headers)
    assert response.status_code == 503
    assert response.json()["type"].endswith("/billing-not-configured")
    assert state.status_code == 200  # everything else works


async def test_operators_are_told_plainly_when_there_is_nothing_to_show_or_replay(
    settings,
) -> None:
    listed = await operations.run(
        settings, argparse.Namespace(billing_command="events", status="failed", limit=5)
    )
    assert listed == "no events"
    with pytest.raises(SystemExit, match="no event evt_missing"):
        await operations.run(
            settings, argparse.Namespace(billing_command="replay", event_id="evt_missing")
        )


async def test_an_event_that_fails_every_try_ends_failed_and_counted(
    client, settings, world, stripe, superuser_engine
) -> None:
    clinic = await world.clinic((Role.owner,))
    # A subscription Stripe does not have (deleted in test mode, say): every retrieve is a 404.
    sub = _sub(clinic.id)
    event = fake.event("customer.subscription.updated", sub)
    await _stripe_sends(client, settings, event)
    for _ in range(RETRIES):
        await due_now(settings)
        await drain(settings)
    row = await event_row(superuser_engine, event["id"])
    assert (row["status"], row["attempts"]) == ("failed", RETRIES + 1)
    assert "BillingRefused" in row["last_error"]
    metrics = await operations.run(settings, argparse.Namespace(billing_command="metrics"))
    assert 'vetify_stripe_events{status="failed"} 1' in metrics


async def test_the_signup_trial_is_announced_three_days_before_it_ends(
    client, settings, superuser_engine, mailbox
) -> None:
    created = await api.signup(
        client,
        clinic_name="Hill Vets",
        owner_name="Joana Reis",
        email="joana@hill.example",
        password=PASSWORD,
    )
    assert created.status_code == 201, created.text
    async with superuser_engine.connect() as connection:
        [scheduled_at] = (
            await connection.scalars(
                text(
                    "SELECT scheduled_at FROM procrastinate_jobs"
                    " WHERE task_name = 'billing.mail_trial_ending'"
                )
            )
        ).all()
    notice = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.billing_trial_days - 3)
    assert abs(scheduled_at - notice) < dt.timedelta(minutes=1)

    def trial_mails() -> list:
        return [m for m in mailbox.received() if m["Subject"] == "Your Vetify trial ends soon"]

    await drain(settings)
    assert trial_mails() == []  # not yet due (the address's verification link is mailed now)
    await due_now(settings)  # eleven days later
    await drain(settings)
    [mail] = trial_mails()
    assert mail["To"] == "joana@hill.example"
    assert mail["Subject"] == "Your Vetify trial ends soon"


async def test_an_api_running_its_own_jobs_applies_events_without_a_worker(
    configured_app, world, stripe
) -> None:
    # What `vetify serve` does on the embedded database: one process, no `vetify worker`.
    clinic = await world.clinic((Role.owner,))
    sub = _sub(clinic.id, plan=Plan.professional)
    stripe.put_subscription(sub)
    async with configured_app(jobs_in_process=True) as app, asgi_client(app) as client:
        assert (await deliver(client, fake.event("customer.subscription.created", sub))).is_success
        for _ in range(200):  # the worker hears of the job at once (LISTEN/NOTIFY)
            if (await billing(client, clinic.owner))["status"] == "active":
                break
            await asyncio.sleep(0.05)
        state = await billing(client, clinic.owner)
    assert (state["status"], state["plan"]) == ("active", "professional")
