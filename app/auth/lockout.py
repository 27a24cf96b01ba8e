"""Failed log-ins per account: exponential back-off, then a temporary lock an owner can lift.

Counted per email address (hashed, whether or not an account has it), so the answers for an
address nobody uses and for a real account are the same: same status, same body, same wait.
The first ``free`` failures cost nothing; each one after blocks the account for 1, 2, 4... s
(at most ``max_backoff``); at ``lock_after`` failures it is locked for ``lock_seconds``. A
success forgets the failures. The counts live in the rate limiter's store: Redis, shared by
every replica, or this process's memory while Redis is away.

An attempt is counted *before* its password is hashed, and the block it would earn is put in
place at the same moment, in one atomic step (a Redis script; under a lock in memory). So
simultaneous guesses cannot all pass the check while the first one is still hashing: of any
burst, at most ``free + 1`` reach the password hash. A success then lifts what its own
reservation put in place; an attempt that ends before any password was judged (overload, a
database outage, a bad clinic choice) gives its reservation back.

Per-IP guessing across many accounts is the ``login`` rate limit's job (app/auth/quotas.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage

from app.kit import crypto
from app.kit.events import SecurityEvent, security_event
from app.kit.problems import InvalidCredentials, MfaRequired, Problem
from app.kit.ratelimit import Limiter, Script
from app.settings import Settings

JUDGED = (InvalidCredentials, MfaRequired)
"""Failures that judged a password or a second factor: they keep the attempt counted."""


class AccountThrottled(Problem):
    status, slug, title = 429, "login-throttled", "Too many failed log-ins"

    def __init__(self, retry_after: int):
        super().__init__(
            f"Too many failed log-ins for this account; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


# KEYS: failures, blocked. ARGV: free, lock_after, lock_ms, max_backoff_ms.
# Answers {0, ms left} while blocked, else {1, the attempt's number}; the block an attempt sets
# holds its number, so that only its own refund lifts it.
_RESERVE_LUA = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {0, left} end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local wait = 0
if n >= tonumber(ARGV[2]) then
    wait = tonumber(ARGV[3])
elseif n > tonumber(ARGV[1]) then
    wait = math.min(1000 * 2 ^ (n - tonumber(ARGV[1]) - 1), tonumber(ARGV[4]))
end
if wait > 0 then redis.call('SET', KEYS[2], n, 'PX', math.floor(wait)) end
return {1, n}
"""

# KEYS: failures, blocked. ARGV: the attempt's number.
_REFUND_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return {1}
"""


def _wait_ms(n: int, free: int, lock_after: int, lock_ms: int, max_backoff_ms: int) -> int:
    if n >= lock_after:
        return lock_ms
    if n > free:
        return min(1000 << (n - free - 1), max_backoff_ms)
    return 0


async def _reserve_in_memory(store: MemoryStorage, keys: list[str], args: list[int]) -> list[int]:
    failures, blocked = keys
    if await store.get(blocked):
        return [0, math.ceil(1000 * max(0.0, await store.get_expiry(blocked) - time.time()))]
    n = await store.incr(failures, args[2] / 1000)
    wait = _wait_ms(n, *args)
    if wait:
        # No block holds (checked above; the store drops an expired one when read): set it.
        await store.incr(blocked, wait / 1000, amount=n)
    return [1, n]


async def _refund_in_memory(store: MemoryStorage, keys: list[str], args: list[int]) -> list[int]:
    failures, blocked = keys
    await store.decr(failures)  # limits' memory store stops at 0, as the script's check does
    if await store.get(blocked) == args[0]:
        await store.clear(blocked)
    return [1]


RESERVE = Script("login-reserve", _RESERVE_LUA, _reserve_in_memory)
REFUND = Script("login-refund", _REFUND_LUA, _refund_in_memory)


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

    def _keys(self, email: str) -> list[str]:
        account = crypto.address_key(email)
        return [f"login-failures:{account}", f"login-blocked:{account}"]

    @asynccontextmanager
    async def attempt(self, email: str) -> AsyncIterator[None]:
        """One attempt to prove who ``email`` is (a password, a second factor).

        Refused with :class:`AccountThrottled` while the account is blocked; otherwise counted
        as a failure from the start. Leaving the block cleanly is a success, which forgets the
        failures; leaving with :data:`JUDGED` keeps the count; anything else refunds it.
        """
        keys = self._keys(email)
        allowed, value = await self.limiter.atomic(
            RESERVE,
            keys,
            [self.free, self.lock_after, self.lock_seconds * 1000, self.max_backoff * 1000],
        )
        if not allowed:
            raise AccountThrottled(max(1, math.ceil(value / 1000)))
        try:
            yield
        except JUDGED:
            # The attempt's number: the one that reaches ``lock_after`` locked the account.
            if value >= self.lock_after:  # this failure locked the account
                security_event(
                    SecurityEvent.lockout, outcome="locked", lock_seconds=self.lock_seconds
                )
            raise
        except Exception:
            # (Not on cancellation: a dropped connection's attempt stays counted.)
            await self.limiter.atomic(REFUND, keys, [value])
            raise
        await self.limiter.forget(*keys)

    async def blocked_for(self, email: str) -> float:
        """Seconds until the account may try again (0: it may now)."""
        return await self.limiter.seconds_left(self._keys(email)[1])

    async def unlock(self, email: str) -> None:
        await self.limiter.forget(*self._keys(email))
