"""Rate limits: moving windows in Redis, a per-process fallback while Redis is away.

A :class:`Policy` is a named quota (``"login"``: 30 per minute). :meth:`Limiter.hit` spends one
unit of a policy for one key (an IP, a user, a clinic) and returns a :class:`Decision`; the
decisions of a request become the IETF ``RateLimit-Policy`` and ``RateLimit`` headers
(draft-ietf-httpapi-ratelimit-headers) of its answer, and an exhausted one a 429.

The window is a moving one (``limits``' moving-window strategy): a fixed window lets a client
spend two quotas back to back across its boundary.

When Redis stops answering, the service keeps answering: hits go to an in-memory store of this
process, the switch is logged and counted, and Redis is tried again after a pause. A policy
marked ``fail_closed`` (login) gets a quarter of its quota in memory, since each replica now
counts on its own and together they would allow several times the quota.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.kit.events import SecurityEvent, security_event
from app.kit.problems import Problem

logger = logging.getLogger("vetify.ratelimit")
T = TypeVar("T")

STATE_KEY = "rate_limit_decisions"
"""Where a request's decisions wait (in the ASGI scope's state) for its response headers."""
REDIS_RETRY_SECONDS = 5.0
FAIL_CLOSED_DIVISOR = 4
REDIS_TIMEOUT_SECONDS = 1.0
"""To connect and for each reply. Either clock also measures this process: its event loop, busy
with a burst, gets to a connection or a reply late although Redis answered at once. At 0.25 s a
burst of 400 calls on the CI machine timed out with Redis well (32 more allowed than the
quota), and so did a burst of 20 log-ins while the security stage ran on both cores (the
back-off judged 6 guesses instead of 3): a spurious fallback splits one count over two stores.
A Redis that hangs costs the calls under way this long, once, before memory takes over."""
REDIS_CONNECTIONS = 32
"""Connections one limiter (one process) keeps to Redis. A burst beyond them waits its turn
(:data:`REDIS_WAIT_SECONDS`): redis-py's own pool refuses at once past 100, which made a
log-in flood fall back to memory, where every process counts from nothing (issue 19)."""
REDIS_WAIT_SECONDS = 1.0
"""How long a call waits for a free connection before it looks again whether Redis has been
found unreachable meanwhile (by a call on one of the busy connections): if so it takes memory,
otherwise it waits again. Every connection busy is this process's backlog, not Redis failing:
a burst that outran the pool fell back to memory and counted from nothing (a quota of 100
allowed 156), a protection giving way exactly under load."""


class PoolBusy(Exception):
    """Every pooled connection stayed in use for the whole wait."""


class _Pool(BlockingConnectionPool):
    """redis-py's blocking pool, whose wait running out is told apart from Redis failing (it
    raises the same ConnectionError as a refused connection)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            # redis-py's deprecation decorator leaves the method untyped.
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):
                raise PoolBusy from error
            raise


@dataclass(frozen=True)
class Policy:
    name: str
    item: RateLimitItem
    fail_closed: bool = False

    @classmethod
    def of(cls, name: str, spec: str, *, fail_closed: bool = False, scale: float = 1.0) -> Policy:
        """``spec`` in ``limits`` notation ("30/minute"); ``scale`` multiplies the amount."""
        item = parse(spec)
        if scale != 1.0:
            item = type(item)(max(1, math.floor(item.amount * scale)), item.multiples)
        return cls(name, item, fail_closed)

    @property
    def window_seconds(self) -> int:
        return int(self.item.get_expiry())


@dataclass(frozen=True)
class Script:
    """A read-and-write on counters that must happen as one step: ``lua`` runs it in Redis
    (where a script is atomic), ``in_memory`` the same rule on this process's store (run under
    the limiter's lock). Both take the keys and integer arguments and answer integers."""

    name: str
    lua: str
    in_memory: Callable[[MemoryStorage, list[str], list[int]], Awaitable[list[int]]]


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    """Seconds until the window has room again."""


_SPEND = """
-- For each key in turn: take a place in its moving window (the list of hit times, newest first,
-- that limits' acquire_moving_window keeps, by the same rule), then count what the window holds;
-- stop after the first key that refuses. Answers (allowed, count, oldest time) per key spent.
local now = tonumber(ARGV[1])
local answers = {}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1])
    local start = now - expiry
    local last = redis.call('lindex', key, limit - 1)
    local allowed = not (last and tonumber(last) >= start)
    if allowed then
        redis.call('lpush', key, now)
        redis.call('ltrim', key, 0, limit - 1)
        redis.call('expire', key, expiry)
    end
    local low, high, count, oldest = 0, redis.call('llen', key) - 1, 0, now
    while low <= high do
        local middle = math.floor((low + high) / 2)
        local entry = tonumber(redis.call('lindex', key, middle))
        if entry and entry >= start then
            count, oldest, low = middle + 1, entry, middle + 1
        else
            high = middle - 1
        end
    end
    answers[#answers + 1] = allowed and 1 or 0
    answers[#answers + 1] = count
    answers[#answers + 1] = tostring(oldest)
    if not allowed then
        break
    end
end
return answers
"""


def _triples(answer: list[Any]) -> list[tuple[Any, Any, Any]]:
    return [(answer[i], answer[i + 1], answer[i + 2]) for i in range(0, len(answer) - 2, 3)]


def _decision(policy: Policy, allowed: bool, count: int, oldest: float) -> Decision:
    """What Redis answered for ``policy``: whether it allowed, how many hits its window holds,
    and when the oldest of them was."""
    item = policy.item
    return Decision(
        policy=policy,
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, item.amount - count),
        reset_after=max(1, math.ceil(oldest + item.get_expiry() - time.time())),
    )


class TooManyRequests(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, decision: Decision):
        super().__init__(
            f"The {decision.policy.name} limit is {decision.limit} requests per "
            f"{decision.policy.window_seconds} s; try again in {decision.reset_after} s.",
            headers={"Retry-After": str(decision.reset_after)},
        )


@dataclass
class Limiter:
    """Spends quotas in Redis (``redis_url``) or, without one, in this process."""

    redis_url: str | None
    key_prefix: str = "vetify:rl"
    retry_seconds: float = REDIS_RETRY_SECONDS
    """How long to stay on memory after Redis failed before trying Redis again."""
    wait_seconds: float = REDIS_WAIT_SECONDS
    """How long a call waits for one of the pool's connections."""
    degradations: int = 0
    """How many times Redis failed and the limiter fell back to memory (a metric)."""
    _memory: MemoryStorage = field(default_factory=MemoryStorage)
    _redis: Storage | None = None
    _pool: BlockingConnectionPool | None = None
    _retry_redis_at: float = 0.0
    _memory_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _scripts: dict[tuple[int, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.redis_url:
            self._pool = _Pool.from_url(
                self.redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=self.wait_seconds,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._redis = RedisStorage(
                f"async+{self.redis_url}",  # limits' name for redis:// and rediss:// with asyncio
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=self.key_prefix,
                connection_pool=self._pool,  # type: ignore[arg-type]  # typed too narrowly
            )
            logger.info("rate limits are kept in Redis (shared by every replica)")
        else:
            logger.info("rate limits are kept in this process's memory (no Redis configured)")

    @property
    def backend(self) -> str:
        if self._redis is None:
            return "memory"
        return "memory (Redis unreachable)" if self.degraded else "redis"

    @property
    def degraded(self) -> bool:
        return self._redis is not None and time.monotonic() < self._retry_redis_at

    async def _on(self, operation: Callable[[Storage], Awaitable[T]]) -> T:
        """Run ``operation`` on Redis or, while Redis is away (or unset), on memory."""
        while self._redis is not None and not self.degraded:
            try:
                result = await operation(self._redis)
            except PoolBusy:
                continue  # this process's backlog: wait again, unless Redis was found away
            except (StorageError, RedisError, OSError, TimeoutError) as exc:
                # Said and counted once, not by every call that was under way with it.
                if not self.degraded:
                    self.degradations += 1
                    logger.warning(
                        "Redis is unreachable (%s); rate limits fall back to this process's "
                        "memory for %.1f s",
                        type(exc).__name__,
                        self.retry_seconds,
                    )
                self._retry_redis_at = time.monotonic() + self.retry_seconds
            else:
                if self._retry_redis_at:
                    self._retry_redis_at = 0.0
                    logger.info("Redis answers again; rate limits are back in Redis")
                return result
        return await operation(self._memory)

    async def hit(self, policy: Policy, key: str) -> Decision:
        return (await self.hit_all([(policy, key)]))[0]

    async def hit_all(self, spends: Sequence[tuple[Policy, str]]) -> list[Decision]:
        """Spend one unit of each policy for its key, in order, until one refuses: that one's
        decision is the last. In Redis, one round trip (:data:`_SPEND`) for them all."""

        async def spend(storage: Storage) -> list[Decision]:
            if isinstance(storage, MemoryStorage):
                decisions: list[Decision] = []
                for policy, key in spends:
                    decisions.append(await self._spend_in_memory(storage, policy, key))
                    if not decisions[-1].allowed:
                        break
                return decisions
            bridge: Any = getattr(storage, "bridge")  # noqa: B009 - limits' redis-py bridge
            keys: list[str] = []
            args: list[float] = [time.time()]
            for policy, key in spends:
                keys.append(bridge.prefixed_key(policy.item.key_for(policy.name, key)))
                args += [policy.item.amount, policy.item.get_expiry()]
            answer = await self._script(bridge.get_connection(), _SPEND)(keys=keys, args=args)
            # Fewer answers than spends when one refused: zip stops with them.
            return [
                _decision(policy, bool(int(allowed)), int(count), float(oldest))
                for (policy, _), (allowed, count, oldest) in zip(
                    spends, _triples(answer), strict=False
                )
            ]

        return await self._on(spend)

    async def _spend_in_memory(self, storage: Storage, policy: Policy, key: str) -> Decision:
        item = policy.item
        if self._redis is not None and policy.fail_closed:
            item = type(item)(max(1, item.amount // FAIL_CLOSED_DIVISOR), item.multiples)
        strategy = MovingWindowRateLimiter(storage)
        allowed = await strategy.hit(item, policy.name, key)
        stats = await strategy.get_window_stats(item, policy.name, key)
        return Decision(
            policy=policy,
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_after=max(1, math.ceil(stats.reset_time - time.time())),
        )

    def _script(self, client: Any, lua: str) -> Any:
        """redis-py's Script for ``lua`` (EVALSHA after its first call), made once per client."""
        key = (id(client), lua)
        script = self._scripts.get(key)
        if script is None:
            script = self._scripts[key] = client.register_script(lua)
        return script

    # Plain counters with an expiry, for rules that are not a window (login back-off): read,
    # cleared, and changed as one step by an atomic script.
    async def seconds_left(self, key: str) -> float:
        """Until ``key`` expires; 0 when it does not exist."""

        async def left(storage: Storage) -> float:
            if not await storage.get(key):
                return 0.0
            return max(0.0, await storage.get_expiry(key) - time.time())

        return await self._on(left)

    async def atomic(self, script: Script, keys: list[str], args: list[int]) -> list[int]:
        """Run ``script`` on ``keys`` as one step, in Redis or in memory."""

        async def run(storage: Storage) -> list[int]:
            if isinstance(storage, MemoryStorage):
                async with self._memory_lock:
                    return await script.in_memory(storage, keys, args)
            bridge: Any = getattr(storage, "bridge")  # noqa: B009 - limits' redis-py bridge
            answer = await self._script(bridge.get_connection(), script.lua)(
                keys=[bridge.prefixed_key(key) for key in keys], args=args
            )
            return [int(value) for value in answer]

        return await self._on(run)

    async def forget(self, *keys: str) -> None:
        async def clear(storage: Storage) -> None:
            for key in keys:
                await storage.clear(key)

        await self._on(clear)

    async def close(self) -> None:
        if self._pool is not None:  # ours: the client made on it leaves it open
            await self._pool.disconnect()


def record(scope: Scope, decision: Decision) -> None:
    """Keep ``decision`` for the response headers; raise 429 if it refuses."""
    scope.setdefault("state", {}).setdefault(STATE_KEY, []).append(decision)
    if not decision.allowed:
        client = scope.get("client")
        security_event(
            SecurityEvent.rate_limited,
            outcome="refused",
            policy=decision.policy.name,
            client_ip=client[0] if client else None,
        )
        raise TooManyRequests(decision)


def headers_for(decisions: list[Decision]) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` (structured-field lists), one item per policy."""
    by_name = {d.policy.name: d for d in decisions}
    return {
        "RateLimit-Policy": ", ".join(
            f'"{d.policy.name}";q={d.limit};w={d.policy.window_seconds}' for d in by_name.values()
        ),
        "RateLimit": ", ".join(
            f'"{d.policy.name}";r={d.remaining};t={d.reset_after}' for d in by_name.values()
        ),
    }


class RateLimitHeaders:
    """Adds the headers of the decisions a request collected to its response (any response:
    the route's own, a problem, a 429)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decisions = scope.get("state", {}).get(STATE_KEY)
                if decisions:
                    headers = MutableHeaders(scope=message)
                    for name, value in headers_for(decisions).items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
