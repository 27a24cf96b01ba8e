"""Auth's mail: the links that verify an address, reset a password, and accept an invitation.

Each job makes the link's secret as it mails it, in the transaction that stores its hash: a
relay that refuses leaves no link behind (the job retries with a new one), and the secret is
never in the database, not even in the job queue's table (ADR 0013).
"""

from __future__ import annotations

import uuid

from procrastinate import RetryStrategy
from procrastinate.job_context import JobContext

from app.auth import lifecycle
from app.auth.mails import MAIL_INVITATION, MAIL_PASSWORD_RESET, MAIL_VERIFICATION
from app.auth.models import TokenPurpose, User
from app.auth.service import invitation_to_mail
from app.db.tenancy import InClinic, enter_tenant
from app.kit.mail import Mail, Mailer
from app.observability import metrics
from app.queue import queue, runtime

# A relay that is down: retried for about an hour, then left (the person can ask again).
_RETRY = RetryStrategy(max_attempts=6, exponential_wait=2)
_IGNORE = "If you did not ask for this, ignore this mail: nothing changes without the link."


@queue.task(name=MAIL_VERIFICATION, queue="mail", pass_context=True, retry=_RETRY)
async def mail_email_verification(context: JobContext, user_id: str) -> None:
    vetify = runtime(context)
    async with vetify.sessions() as session, session.begin():
        user = await session.get(User, uuid.UUID(user_id))
        if user is None or not user.active or user.email_verified_at is not None:
            return
        secret = await lifecycle.new_link(session, vetify.settings, user, TokenPurpose.verify_email)
        hours = vetify.settings.email_verification_valid_hours
        mailer: Mailer = vetify.service("mail", Mailer)
        await metrics.send(
            mailer,
            Mail(
                to=(user.email,),
                subject="Verify your address for Vetify",
                text=(
                    f"Hello {user.name},\n\n"
                    "Someone, we hope you, made a Vetify account with this address. To verify"
                    " it, log in and open this link (it works once, for"
                    f" {hours} hours):\n\n"
                    f"{vetify.settings.public_url}/verify-email?token={secret}\n\n"
                    "Until the address is verified the account cannot invite staff or start"
                    " paying. If this account is not yours, do not open the link; to take the"
                    " address back, reset the password: the account's password then stops"
                    " working for whoever made it.\n"
                ),
            ),
        )


@queue.task(name=MAIL_PASSWORD_RESET, queue="mail", pass_context=True, retry=_RETRY)
async def mail_password_reset(context: JobContext, user_id: str) -> None:
    vetify = runtime(context)
    async with vetify.sessions() as session, session.begin():
        user = await session.get(User, uuid.UUID(user_id))
        if user is None or not user.active:
            return
        secret = await lifecycle.new_link(
            session, vetify.settings, user, TokenPurpose.reset_password
        )
        minutes = max(1, vetify.settings.password_reset_valid_seconds // 60)
        mailer: Mailer = vetify.service("mail", Mailer)
        await metrics.send(
            mailer,
            Mail(
                to=(user.email,),
                subject="Reset your Vetify password",
                text=(
                    f"Hello {user.name},\n\n"
                    "To choose a new password, open this link (it works once, for"
                    f" {minutes} minutes):\n\n"
                    f"{vetify.settings.public_url}/reset-password?token={secret}\n\n"
                    "Setting it logs you out everywhere. " + _IGNORE + "\n"
                ),
            ),
        )


@queue.task(name=MAIL_INVITATION, queue="mail", pass_context=True, retry=_RETRY)
async def mail_invitation(context: JobContext, clinic_id: str, invitation_id: str) -> None:
    vetify = runtime(context)
    async with vetify.sessions() as session, session.begin():
        clinic = InClinic(uuid.UUID(clinic_id))
        await enter_tenant(session, clinic.clinic_id)
        found = await invitation_to_mail(session, clinic, uuid.UUID(invitation_id))
        if found is None:
            return
        secret, invitation, where, inviter = found
        mailer: Mailer = vetify.service("mail", Mailer)
        await metrics.send(
            mailer,
            Mail(
                to=(invitation.email,),
                subject="You are invited to a clinic on Vetify",
                text=(
                    f"{inviter.name} invites you to join {where.name} on Vetify as"
                    f" {invitation.role.value.replace('_', ' ')}.\n\n"
                    "To accept, open this link (it works once, until"
                    f" {invitation.expires_at:%d %B %Y, %H:%M} UTC):\n\n"
                    f"{vetify.settings.public_url}/invitations/accept?token={secret}\n\n"
                    + _IGNORE
                    + "\n"
                ),
            ),
        )
