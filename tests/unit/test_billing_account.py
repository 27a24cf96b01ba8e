"""The clinic's billing account as the API reads and changes it (`app.billing.account`), with
the database and Stripe stood in for: the quota and write standing every request carries, the
owner's overview, what checkout and the portal ask Stripe for, and the trial's notice. The same
through the API and the fake Stripe is tests/integration/test_billing*.py's."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from app.auth.models import CredentialKind, Role
from app.auth.principal import Principal, Standing
from app.billing import account as billing
from app.billing import jobs
from app.billing.account import (
    MAIL_TRIAL_ENDING,
    NoAccount,
    Overview,
    checkout,
    current_account,
    open_account,
    overview,
    portal,
    standing,
)
from app.billing.models import SubscriptionStatus
from app.billing.plans import DEFAULT_PLAN, PLANS, Plan
from app.db.tenancy import TENANT_KEY, InClinic
from app.kit.problems import Conflict, InvalidInput
from app.settings import Settings
from tests.harness.billing import PRICES, AccountStandIn

CLINIC = uuid.UUID("0e1d2c3b-4a59-4687-9a5b-4c3d2e1f0a9b")
NOW = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
SETTINGS = Settings(
    _env_file=None,
    public_url="https://app.vetify.example",
    stripe_price_starter=PRICES[Plan.starter],
    stripe_price_professional=PRICES[Plan.professional],
)
GRACE = dt.timedelta(days=SETTINGS.billing_grace_days)
OWNER = Principal(
    user_id=uuid.UUID("6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"),
    clinic_id=CLINIC,
    role=Role.owner,
    credential_id=uuid.UUID("1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"),
    credential_kind=CredentialKind.session,
)


class Session:
    """What the account code asks of its session: the clinic it is in, the rows it adds, the
    owner it reads."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {TENANT_KEY: CLINIC}
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)

    async def flush(self) -> None:
        pass

    async def get_one(self, model: Any, user_id: uuid.UUID) -> Any:
        assert user_id == OWNER.user_id
        return SimpleNamespace(email="rita@harbour.example")


def stand_in() -> Any:
    """A :class:`Session`, typed as the session the code under test takes."""
    return Session()


class Stripe:
    def __init__(self) -> None:
        self.customers: list[tuple[Any, ...]] = []
        self.checkouts: list[dict[str, Any]] = []
        self.portals: list[dict[str, Any]] = []

    async def create_customer(self, clinic_id: uuid.UUID, name: str, email: str) -> str:
        self.customers.append((clinic_id, name, email))
        return "cus_new"

    async def create_checkout_session(self, **asked: Any) -> str:
        self.checkouts.append(asked)
        return "https://pay/cs_1"

    async def create_portal_session(self, **asked: Any) -> str:
        self.portals.append(asked)
        return "https://portal/1"


class Books(AccountStandIn):
    """The clinic's account row, its verified owner and its clinic row."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch, billing, CLINIC, NOW, dt.timedelta(days=10))

        async def verified(session: Any, caller: Principal) -> None:
            assert caller is OWNER

        async def clinic(session: Any, caller: Any, model: Any, clinic_id: Any, name: str) -> Any:
            assert clinic_id == CLINIC
            return SimpleNamespace(name="Harbour Vets")

        monkeypatch.setattr(billing, "require_verified_email", verified)
        monkeypatch.setattr(billing, "get_or_404", clinic)


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Books:
    return Books(monkeypatch)


# -- standing and overview ---------------------------------------------------------------------
@pytest.mark.parametrize("plan", list(Plan))
async def test_the_quota_is_the_plan_the_clinic_pays_for(books: Books, plan: Plan) -> None:
    books.row.plan = plan
    found = await standing(stand_in(), SETTINGS, CLINIC)
    # Kept (by the credential cache) until the trial's end, when it may change by itself.
    changes_at = books.row.trial_ends_at
    assert found == Standing(PLANS[plan].api_requests_per_minute, False, changes_at)


async def test_a_clinic_without_an_account_has_the_default_quota_and_is_read_only(
    books: Books,
) -> None:
    books.account = None
    found = await standing(stand_in(), SETTINGS, CLINIC)
    assert found == Standing(PLANS[DEFAULT_PLAN].api_requests_per_minute, read_only=True)


@pytest.mark.parametrize(
    ("since", "read_only"), [(NOW - GRACE + dt.timedelta(minutes=1), False), (NOW - GRACE, True)]
)
async def test_a_clinic_past_due_writes_until_its_grace_ends(
    books: Books, since: dt.datetime, read_only: bool
) -> None:
    row = books.row
    row.status, row.stripe_subscription_id, row.past_due_since = (
        SubscriptionStatus.past_due,
        "sub_1",
        since,
    )
    found = await standing(stand_in(), SETTINGS, CLINIC)
    assert found.read_only is read_only
    # The grace's end while it is ahead, else the next boundary still ahead (the old trial's).
    assert found.changes_at == (since + GRACE if not read_only else row.trial_ends_at)
    assert await overview(stand_in(), SETTINGS, OWNER) == Overview(
        plan=Plan.starter, account=row, read_only=read_only, grace_ends_at=since + GRACE
    )


async def test_the_overview_of_a_trial_has_no_grace(books: Books) -> None:
    books.row.plan = Plan.enterprise
    assert await overview(stand_in(), SETTINGS, OWNER) == Overview(
        plan=Plan.enterprise, account=books.row, read_only=False, grace_ends_at=None
    )


async def test_a_clinic_without_its_account_is_a_bug_named_by_its_clinic(books: Books) -> None:
    books.account = None
    with pytest.raises(NoAccount, match=f"^clinic {CLINIC} has no billing account$"):
        await current_account(stand_in(), InClinic(CLINIC))


# -- checkout and portal ------------------------------------------------------------------------
async def test_a_first_checkout_makes_the_clinics_customer_and_carries_the_trial_over(
    books: Books,
) -> None:
    stripe = Stripe()
    url = await checkout(stand_in(), SETTINGS, stripe, OWNER, Plan.professional)
    assert url == "https://pay/cs_1"
    assert books.locks == [True]  # two checkouts at once make one customer
    assert stripe.customers == [(CLINIC, "Harbour Vets", "rita@harbour.example")]
    assert books.row.stripe_customer_id == "cus_new"
    assert stripe.checkouts == [
        {
            "clinic_id": CLINIC,
            "customer": "cus_new",
            "price": PRICES[Plan.professional],
            "trial_end": int((NOW + dt.timedelta(days=10)).timestamp()),
            "success_url": "https://app.vetify.example/billing?checkout=done",
            "cancel_url": "https://app.vetify.example/billing?checkout=cancelled",
        }
    ]


@pytest.mark.parametrize(
    ("left", "carried"),
    [
        (dt.timedelta(hours=48, minutes=30), True),
        (dt.timedelta(hours=48), False),  # Stripe refuses a trial ending under 48 hours ahead
        (dt.timedelta(hours=24), False),
        (None, False),
    ],
)
async def test_a_trial_carries_over_only_if_it_ends_more_than_48_hours_ahead(
    books: Books, left: dt.timedelta | None, carried: bool
) -> None:
    books.row.trial_ends_at = NOW + left if left is not None else None
    books.row.stripe_customer_id = "cus_1"
    stripe = Stripe()
    await checkout(stand_in(), SETTINGS, stripe, OWNER, Plan.starter)
    assert stripe.customers == []  # the clinic's customer is reused
    expected = int((NOW + left).timestamp()) if carried and left is not None else None
    assert stripe.checkouts[0]["trial_end"] == expected
    assert stripe.checkouts[0]["customer"] == "cus_1"


async def test_a_plan_without_a_price_is_not_on_sale(books: Books) -> None:
    with pytest.raises(InvalidInput) as refused:
        await checkout(stand_in(), SETTINGS, Stripe(), OWNER, Plan.enterprise)
    assert refused.value.detail == "The enterprise plan is not on sale."


async def test_the_portal_is_asked_for_the_clinics_customer_in_five_minute_windows(
    books: Books,
) -> None:
    stripe = Stripe()
    with pytest.raises(Conflict):
        await portal(stand_in(), SETTINGS, stripe, OWNER)
    books.row.stripe_customer_id = "cus_1"
    assert await portal(stand_in(), SETTINGS, stripe, OWNER) == "https://portal/1"
    [asked] = stripe.portals
    assert asked == {
        "customer": "cus_1",
        "return_url": "https://app.vetify.example/billing",
        "window": int(NOW.timestamp()) // 300,
    }
    assert type(asked["window"]) is int


# -- the trial -------------------------------------------------------------------------------------
async def test_a_new_clinics_trial_is_announced_three_days_before_it_ends(books: Books) -> None:
    session = Session()
    made = await open_account(session, InClinic(CLINIC), 14)  # type: ignore[arg-type]
    assert session.added == [made]
    assert (made.status, made.trial_ends_at) == (
        SubscriptionStatus.trialing,
        NOW + dt.timedelta(days=14),
    )
    assert books.queued == [
        (
            MAIL_TRIAL_ENDING,
            {"schedule_at": NOW + dt.timedelta(days=11), "clinic_id": str(CLINIC)},
        )
    ]


def test_the_trial_mail_says_when_the_trial_ends_and_what_read_only_means() -> None:
    ends = dt.datetime(2026, 12, 19, 9, 30, tzinfo=dt.UTC)
    mail = jobs._trial_mail(["rita@harbour.example"], ends, SETTINGS)
    assert mail.to == ("rita@harbour.example",)
    assert mail.subject == "Your Vetify trial ends soon"
    assert mail.text == (
        "Your clinic's Vetify trial ends on 19 December 2026, 09:30 UTC.\n\n"
        "Add a payment method before then to keep writing records and booking appointments;"
        " without one the clinic becomes read-only (nothing is deleted, and everything can"
        " still be read and exported).\n\n"
        "Billing: https://app.vetify.example/billing\n"
    )
