"""Stripe's objects and events as a scenario needs them, built from Stripe's own examples.

* ``official(resource)``: Stripe's published example object (``fixtures/stripe``); every
  object here starts from one, so field names and nesting are Stripe's, not our guess.
* ``subscription``/``invoice``/``checkout_session``/``event``: builders that change only what
  a scenario states; ``new_id`` makes a Stripe-looking id.
"""

from __future__ import annotations

import copy
import functools
import json
import string
import time
from pathlib import Path
from secrets import choice
from typing import Any

import stripe

FIXTURES_PATH = Path(__file__).resolve().parents[3] / "fixtures" / "stripe" / "fixtures3.json"

# The version the SDK pins its requests to: webhook endpoints made with it send this one.
API_VERSION: str = stripe.api_version

_ALPHANUMERIC = string.ascii_letters + string.digits
_MONTH = 30 * 24 * 3600


@functools.cache
def _resources() -> dict[str, Any]:
    # Read once per process: 190 kB of JSON, and callers always get a deep copy.
    with FIXTURES_PATH.open(encoding="utf-8") as handle:
        resources: dict[str, Any] = json.load(handle)["resources"]
    return resources


def official(resource: str) -> dict[str, Any]:
    """A deep copy of Stripe's example ``resource`` (e.g. ``"checkout.session"``)."""
    try:
        return copy.deepcopy(_resources()[resource])
    except KeyError:
        raise KeyError(f"{resource!r} is not a resource in {FIXTURES_PATH.name}") from None


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: ``prefix`` then base62, as Stripe's are (``cus_QXg1o8vcGmoR32``)."""
    return prefix + "".join(choice(_ALPHANUMERIC) for _ in range(length))


def event(
    type: str,
    obj: dict[str, Any],
    *,
    id: str | None = None,
    created: int | None = None,
    api_version: str = API_VERSION,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event envelope around ``obj``, as a webhook delivers it."""
    evt = official("event")
    evt.update(
        id=id or new_id("evt_"),
        type=type,
        created=int(time.time()) if created is None else created,
        api_version=api_version,
        livemode=False,
        # A delivery is itself pending when it is sent: Stripe counts it.
        pending_webhooks=1,
        request={"id": new_id("req_", 14), "idempotency_key": None},
        data={"object": obj},
    )
    if previous_attributes is not None:  # only `*.updated` events carry it
        evt["data"]["previous_attributes"] = previous_attributes
    return evt


def subscription(
    *,
    id: str | None = None,
    customer: str,
    status: str,
    price: str,
    clinic_id: str | None = None,
    trial_end: int | None = None,
    current_period_end: int | None = None,
    cancel_at_period_end: bool = False,
    created: int | None = None,
) -> dict[str, Any]:
    """A one-item subscription to ``price``.

    Since API version 2025-03-31 (basil) the billing period is per item: it is
    ``items.data[0].current_period_start/_end``; the subscription itself has no period fields.
    """
    sub = official("subscription")
    sub_id = id or new_id("sub_")
    start = int(time.time()) if created is None else created
    period_end = start + _MONTH if current_period_end is None else current_period_end
    sub.update(
        id=sub_id,
        customer=customer,
        status=status,
        created=start,
        start_date=start,
        billing_cycle_anchor=period_end,
        metadata={"clinic_id": clinic_id} if clinic_id is not None else {},
        cancel_at_period_end=cancel_at_period_end,
        # The example has every optional branch filled in (cancelled, ended, a pending
        # update, a discount...): a plain live subscription has none of them.
        cancel_at=period_end if cancel_at_period_end else None,
        canceled_at=start if status == "canceled" or cancel_at_period_end else None,
        ended_at=start if status == "canceled" else None,
        trial_start=start if trial_end is not None else None,
        trial_end=trial_end,
        pending_update=None,
        pause_collection=None,
        next_pending_invoice_item_invoice=None,
        pending_invoice_item_interval=None,
        transfer_data=None,
        latest_invoice=None,
        livemode=False,
    )
    item = sub["items"]["data"][0]
    item.update(
        id=new_id("si_", 14),
        subscription=sub_id,
        created=start,
        current_period_start=period_end - _MONTH,
        current_period_end=period_end,
    )
    item["price"]["id"] = price
    item["plan"]["id"] = price  # a recurring price's legacy `plan` mirrors it, same id
    sub["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
    return sub


def invoice(
    *,
    customer: str,
    subscription: str,
    status: str,
    id: str | None = None,
) -> dict[str, Any]:
    """An invoice of ``subscription``.

    Since basil an invoice names its subscription only through
    ``parent.subscription_details.subscription`` (``parent.type == "subscription_details"``);
    the example's top-level ``subscription`` is null, and stays so here.
    """
    inv = official("invoice")
    inv_id = id or new_id("in_")
    now = int(time.time())
    paid = status == "paid"
    inv.update(
        id=inv_id,
        customer=customer,
        status=status,
        created=now,
        billing_reason="subscription_cycle",
        # The example fills every branch of the `parent` union; a subscription's invoice
        # has only its own branch.
        parent={
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": None, "subscription": subscription},
        },
        amount_paid=inv["amount_due"] if paid else 0,
        amount_remaining=0 if paid else inv["amount_due"],
        attempted=status != "draft",
        attempt_count=0 if status == "draft" else 1,
        last_finalization_error=None,
        from_invoice=None,
        livemode=False,
    )
    inv["status_transitions"].update(
        finalized_at=None if status == "draft" else now,
        paid_at=now if paid else None,
    )
    line = inv["lines"]["data"][0]
    line["invoice"] = inv_id
    line["parent"] = {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": subscription,
            "subscription_item": new_id("si_", 14),
        },
    }
    inv["lines"]["url"] = f"/v1/invoices/{inv_id}/lines"
    return inv


def checkout_session(
    *,
    customer: str | None,
    subscription: str | None,
    client_reference_id: str | None,
    id: str | None = None,
    status: str = "complete",
    mode: str = "subscription",
) -> dict[str, Any]:
    """A Checkout Session as ``checkout.session.completed`` carries it (by default)."""
    session = official("checkout.session")
    complete = status == "complete"
    session.update(
        id=id or new_id("cs_test_", 58),
        customer=customer,
        subscription=subscription,
        client_reference_id=client_reference_id,
        status=status,
        mode=mode,
        created=int(time.time()),
        payment_status="paid" if complete else "unpaid",
        # Subscription mode has no PaymentIntent; a finished session no longer has a URL.
        payment_intent=None if mode != "payment" else session["payment_intent"],
        url=None if complete else session["url"],
        livemode=False,
    )
    return session
