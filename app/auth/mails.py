"""What auth mails, by task name (the tasks are in ``app/auth/jobs.py``).

Every mailed link is made by the job that sends it: its secret exists only in the mail, and
the job queue's table holds nothing but a user's or an invitation's id (ADR 0013).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.kit.events import SecurityEvent, security_event
from app.queue import enqueue

MAIL_VERIFICATION = "auth.mail_email_verification"
# pragma: allowlist nextline secret - a task name, not a secret
MAIL_PASSWORD_RESET = "auth.mail_password_reset"  # noqa: S105  # nosec B105
MAIL_INVITATION = "auth.mail_invitation"


async def verify_address(session: AsyncSession, user: User) -> None:
    """Mail ``user`` a link that verifies their address (in ``session``'s transaction)."""
    await enqueue(session, MAIL_VERIFICATION, user_id=str(user.id))
    security_event(SecurityEvent.email_verification_mailed, outcome="queued", user_id=user.id)
