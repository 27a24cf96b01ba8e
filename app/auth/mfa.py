"""Multi-factor authentication: TOTP (RFC 6238) with recovery codes, per user.

A code is accepted for the current 30-second step or one step either side (clock drift), and
never for a step at or before the last one accepted, so an overheard code cannot be replayed.
Recovery codes are single use. Both are consumed by one conditional UPDATE, so two requests
racing with the same code cannot both win.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid

import pyotp
from sqlalchemy import or_, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.keys import rotation
from app.keys import service as keys

ISSUER = "Vetify"
STEP_SECONDS = 30
DRIFT_STEPS = 1
RECOVERY_CODE_COUNT = 10
_TOTP_CODE = re.compile(r"[0-9]{6}")
SEALED_IN = "users.totp_secret"
"""Where a sealed secret is bound to (a user's row: users are the platform's, not a clinic's)."""
rotation.seals(rotation.SealedColumn("users", "totp_secret_sealed", SEALED_IN))


def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits, RFC 4226's recommendation


async def seal_secret(session: AsyncSession, user_id: uuid.UUID, secret: str) -> bytes:
    """``secret`` as ``users.totp_secret_sealed`` holds it for this user."""
    return await keys.seal(session, keys.PLATFORM, SEALED_IN, user_id, secret)


async def secret_of(session: AsyncSession, user: User) -> str | None:
    if user.totp_secret_sealed is None:
        return None
    return await keys.unseal(session, keys.PLATFORM, SEALED_IN, user.id, user.totp_secret_sealed)


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code this is, within the allowed drift; None if none."""
    if not _TOTP_CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    """Ten codes of 80 random bits each, written ``xxxxx-xxxxx-xxxxx-xxxxx`` (hex)."""
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = secrets.token_hex(10)
        codes.append("-".join(raw[i : i + 5] for i in range(0, 20, 5)))
    return codes


def hash_recovery_code(code: str) -> bytes:
    """Spaces, dashes and case do not matter when a person types the code back."""
    normal = re.sub(r"[\s-]", "", code).lower()
    return hashlib.sha256(b"vetify-recovery:" + normal.encode()).digest()


async def accept_totp(session: AsyncSession, user: User, code: str) -> bool:
    """Whether ``code`` is the user's current TOTP code, never used before; marks it used."""
    secret = await secret_of(session, user)
    if secret is None:
        return False
    step = matching_step(secret, code)
    if step is None:
        return False
    accepted = await session.execute(
        update(User)
        .where(
            User.id == user.id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    return accepted.first() is not None


async def use_recovery_code(session: AsyncSession, user: User, code: str) -> bool:
    """Whether ``code`` is one of the user's unused recovery codes; removes it if so."""
    used = await session.execute(
        text(
            "UPDATE users SET recovery_codes = array_remove(recovery_codes, :code)"
            " WHERE id = :id AND :code = ANY(recovery_codes) RETURNING id"
        ),
        {"id": user.id, "code": hash_recovery_code(code)},
    )
    return used.first() is not None


async def accept_second_factor(session: AsyncSession, user: User, code: str) -> bool:
    """A TOTP code (six digits) or else a recovery code."""
    if not user.mfa_enabled:
        return False
    if _TOTP_CODE.fullmatch(code):
        return await accept_totp(session, user, code)
    return await use_recovery_code(session, user, code)
