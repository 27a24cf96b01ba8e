"""Failed log-ins per account: exponential back-off, then a temporary lock an owner can lift.

Counted per email address (hashed, whether or not an account has it), so the answers for an
address nobody uses and for a real account are the same: same status, same body, same wait.
The first ``free`` failures cost nothing; each one after blocks the account for 1, 2, 4... s
(at most ``max_backoff``); at ``lock_after`` failures it is locked for ``lock_seconds``. A
success forgets the failures. The counts live in the rate limiter's store: Redis, shared by
every replica, or this process's memory while Redis is away.

Per-IP guessing across many accounts is the ``login`` rate limit's job (app/auth/quotas.py).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from app.kit.problems import Problem
from app.kit.ratelimit import Limiter
from app.settings import Settings


class AccountThrottled(Problem):
    status, slug, title = 429, "login-throttled", "Too many failed log-ins"

    def __init__(self, retry_after: int):
        super().__init__(
            f"Too many failed log-ins for this account; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


@dataclass(frozen=True)
class LoginGuard:
    limiter: Limiter
    free: int
    lock_after: int
    lock_seconds: int
    max_backoff: int = 300

    @classmethod
    def from_settings(cls, limiter: Limiter, settings: Settings) -> LoginGuard:
        return cls(
            limiter,
            free=settings.login_free_failures,
            lock_after=settings.login_lockout_failures,
            lock_seconds=settings.login_lockout_minutes * 60,
        )

    @staticmethod
    def _account(email: str) -> str:
        # No address in the store: a dump of Redis must not list who uses the service.
        return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]

    def _keys(self, email: str) -> tuple[str, str]:
        account = self._account(email)
        return f"login-failures:{account}", f"login-blocked:{account}"

    async def check(self, email: str) -> None:
        """Raise :class:`AccountThrottled` while the account is blocked or locked."""
        _, blocked = self._keys(email)
        left = await self.limiter.seconds_left(blocked)
        if left > 0:
            raise AccountThrottled(max(1, math.ceil(left)))

    async def failed(self, email: str) -> None:
        failures_key, blocked = self._keys(email)
        failures = await self.limiter.count(failures_key, self.lock_seconds)
        if failures >= self.lock_after:
            wait = self.lock_seconds
        elif failures > self.free:
            wait = min(2 ** (failures - self.free - 1), self.max_backoff)
        else:
            return
        await self.limiter.forget(blocked)
        await self.limiter.count(blocked, wait)

    async def succeeded(self, email: str) -> None:
        await self.limiter.forget(self._keys(email)[0])

    async def unlock(self, email: str) -> None:
        await self.limiter.forget(*self._keys(email))
