"""The Stripe fields billing reads, and how it reads them.

``STRIPE_FIELDS`` lists every field of a Stripe object the billing code reads, with the JSON
types it accepts; tests/contract/stripe/test_field_paths.py proves each is in Stripe's published
example object with such a value, and that the code reads no field missing here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

_NONE = type(None)
_EXPANDABLE = (str, dict)  # an id, or the object when the request expanded it
STRIPE_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    # Every field of a Stripe object this module reads, with the JSON types it accepts (dotted
    # paths, ``[]`` for a list's items). tests/contract/stripe/test_field_paths.py proves each
    # is in Stripe's published example object with such a value, and that the code reads no
    # field missing here. A ``metadata`` hash is ours (``clinic_id``): its keys are not listed.
    "event": {
        "id": str,
        "type": str,
        "created": int,
        "livemode": bool,
        "data": dict,
        "data.object": dict,
    },
    "subscription": {
        "id": str,
        "customer": _EXPANDABLE,
        "metadata": dict,
        "created": int,
        "status": str,
        "trial_end": (int, _NONE),
        "cancel_at_period_end": bool,
        "items": dict,
        "items.data": list,
        "items.data[].current_period_end": int,
        "items.data[].price": dict,
        "items.data[].price.id": str,
    },
    "invoice": {
        "customer": (*_EXPANDABLE, _NONE),
        "parent": (dict, _NONE),
        "parent.subscription_details": (dict, _NONE),
        "parent.subscription_details.subscription": _EXPANDABLE,
        "parent.subscription_details.metadata": (dict, _NONE),
    },
    "checkout.session": {
        "mode": str,
        "subscription": (*_EXPANDABLE, _NONE),
        "client_reference_id": (str, _NONE),
        "customer": (*_EXPANDABLE, _NONE),
    },
    "customer": {
        "metadata": dict,
    },
}


def object_id(value: Any) -> str:
    """An expandable field: Stripe sends the id, or the object when asked to expand it."""
    return str(value["id"] if isinstance(value, dict) else value)


def clinic_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


def epoch_time(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)
