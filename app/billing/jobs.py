"""Billing's background work: applying the Stripe events the webhook stored, and telling a
clinic's owners that its trial ends."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from procrastinate import RetryStrategy
from procrastinate.job_context import JobContext
from sqlalchemy import select

from app.auth.service import owner_emails
from app.billing.account import MAIL_TRIAL_ENDING, find_account
from app.billing.intake import APPLY_STRIPE_EVENT
from app.billing.models import EventStatus, StripeEvent, SubscriptionStatus
from app.billing.stripe_api import Stripe
from app.billing.sync import apply_event
from app.db.tenancy import InClinic, enter_tenant
from app.kit import context as job_context
from app.kit.clock import utcnow
from app.kit.mail import Mail, Mailer
from app.observability import metrics
from app.queue import queue, runtime
from app.settings import Settings

log = logging.getLogger("vetify.billing")

RETRIES = 8
"""After the first try: 3 s, 9 s, 27 s ... about 3 hours in all; then the event is ``failed``
and waits for an operator (``vetify billing replay``). Stripe itself redelivers for 3 days."""
_DONE = frozenset({EventStatus.processed, EventStatus.ignored})


@queue.task(
    name=APPLY_STRIPE_EVENT,
    queue="billing",
    pass_context=True,
    retry=RetryStrategy(max_attempts=RETRIES, exponential_wait=3),
)
async def apply_stripe_event(context: JobContext, event_id: str) -> None:
    vetify = runtime(context)
    stripe: Stripe = vetify.service("stripe", Stripe)
    job_context.update(event_id=event_id)
    try:
        async with vetify.sessions() as session, session.begin():
            # Held to the end: a second job for the same event waits, then finds it done.
            event = (
                await session.scalars(
                    select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()
                )
            ).one_or_none()
            if event is None or event.status in _DONE:
                return
            outcome = await apply_event(session, vetify.settings, stripe, event.payload)
            event.status = outcome.status
            event.clinic_id = outcome.clinic_id
            job_context.update(clinic_id=outcome.clinic_id)
            event.note = outcome.note
            event.last_error = None
            event.attempts += 1
            event.processed_at = utcnow()
            log.info("stripe event %s applied: %s", event_id, outcome.status)
    except Exception as exc:
        attempt = context.job.attempts if context.job else 0
        await _record_failure(context, event_id, exc, final=attempt >= RETRIES)
        raise


async def _record_failure(
    context: JobContext, event_id: str, exc: Exception, *, final: bool
) -> None:
    log.warning("stripe event %s failed (%s)", event_id, type(exc).__name__, exc_info=exc)
    async with runtime(context).sessions() as session, session.begin():
        event = await session.get(StripeEvent, event_id)
        if event is not None:
            event.attempts += 1
            event.status = EventStatus.failed if final else EventStatus.retrying
            event.last_error = f"{type(exc).__name__}: {exc}"[:2000]


@queue.task(
    name=MAIL_TRIAL_ENDING,
    queue="mail",
    pass_context=True,
    # A relay that is down: retried for about an hour, then left (the billing page says it too).
    retry=RetryStrategy(max_attempts=6, exponential_wait=2),
)
async def mail_trial_ending(context: JobContext, clinic_id: str) -> None:
    """Tell the owners, once per trial and only while it runs: the signup's scheduled notice
    and Stripe's ``trial_will_end`` both come here."""
    vetify = runtime(context)
    async with vetify.sessions() as session, session.begin():
        clinic = InClinic(uuid.UUID(clinic_id))
        await enter_tenant(session, clinic.clinic_id)
        # Held while mailing: a second notice waits, then finds this one recorded.
        account = await find_account(session, clinic, lock=True)
        if (
            account is None
            or account.status is not SubscriptionStatus.trialing
            or account.trial_ends_at is None
            or account.trial_ends_at <= utcnow()
            or account.trial_will_end_at is not None
        ):
            return
        recipients = await owner_emails(session)
        mailer: Mailer = vetify.service("mail", Mailer)
        # Recorded only once sent: a relay that is down gets the mail retried, not lost.
        if recipients:
            await metrics.send(
                mailer, _trial_mail(recipients, account.trial_ends_at, vetify.settings)
            )
        account.trial_will_end_at = utcnow()


def _trial_mail(recipients: list[str], ends_at: dt.datetime, settings: Settings) -> Mail:
    ends = ends_at.strftime("%d %B %Y, %H:%M UTC")
    return Mail(
        to=tuple(recipients),
        subject="Your Vetify trial ends soon",
        text=(
            f"Your clinic's Vetify trial ends on {ends}.\n\n"
            "Add a payment method before then to keep writing records and booking"
            " appointments; without one the clinic becomes read-only (nothing is deleted,"
            " and everything can still be read and exported).\n\n"
            f"Billing: {settings.public_url}/billing\n"
        ),
    )
