"""Who spends which rate-limit quota: the policies, from settings and the clinic's standing.

Anonymous callers spend per client IP; authenticated ones per user, per API token and per
clinic (the plan's quota, shared by all its staff). Routes an attacker would hammer (log in,
sign up, create a token, upload, reset or change a password) have tighter quotas of their
own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.kit import ratelimit
from app.kit.ratelimit import Limiter, Policy
from app.settings import Settings


@dataclass(frozen=True)
class Quotas:
    scale: float
    anonymous: Policy
    user: Policy
    token: Policy
    login: Policy
    signup: Policy
    token_create: Policy
    upload: Policy
    password_reset: Policy
    password_reset_address: Policy
    verification_mail: Policy
    password_change: Policy

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
        scale = settings.rate_limit_scale
        return cls(
            scale=scale,
            anonymous=Policy.of("anonymous", settings.rate_limit_anonymous, scale=scale),
            user=Policy.of("user", settings.rate_limit_user, scale=scale),
            token=Policy.of("token", settings.rate_limit_token, scale=scale),
            # Failing closed: while Redis is away, guessing passwords gets harder, not easier.
            login=Policy.of("login", settings.rate_limit_login, scale=scale, fail_closed=True),
            signup=Policy.of("signup", settings.rate_limit_signup, scale=scale),
            token_create=Policy.of("token-create", settings.rate_limit_token_create, scale=scale),
            upload=Policy.of("upload", settings.rate_limit_upload, scale=scale),
            password_reset=Policy.of(
                "password-reset", settings.rate_limit_password_reset, scale=scale
            ),
            password_reset_address=Policy.of(
                "password-reset-address", settings.rate_limit_password_reset_address, scale=scale
            ),
            verification_mail=Policy.of(
                "verification-mail", settings.rate_limit_verification_mail, scale=scale
            ),
            password_change=Policy.of(
                "password-change", settings.rate_limit_password_change, scale=scale
            ),
        )

    def clinic(self, requests_per_minute: int) -> Policy:
        """The clinic's whole quota (its plan's, as its standing says)."""
        return Policy.of("clinic", f"{requests_per_minute}/minute", scale=self.scale)


def client_ip(request: Request) -> str:
    """The caller's address: the direct peer, or the client a trusted proxy names (the proxy
    middleware has already put it in ``request.client``)."""
    return request.client.host if request.client else "unknown"


async def spend(request: Request, policy: Policy, key: str) -> None:
    """Spend one unit of ``policy`` for ``key``; 429 when none is left."""
    await spend_all(request, [(policy, key)])


async def spend_all(request: Request, spends: list[tuple[Policy, str]]) -> None:
    """Spend one unit of each policy for its key (in one round trip to Redis), in order; 429 at
    the first with none left, the later ones unspent."""
    limiter: Limiter = request.app.state.limiter
    for decision in await limiter.hit_all(spends):
        ratelimit.record(request.scope, decision)


async def quotas(request: Request) -> Quotas:
    value: Quotas = request.app.state.quotas
    return value


AppQuotas = Annotated[Quotas, Depends(quotas)]


def per_ip(pick: Callable[[Quotas], Policy]) -> Callable[[Request, Quotas], Awaitable[None]]:
    """A route dependency spending ``pick(quotas)`` per client IP."""

    async def spend_per_ip(request: Request, quotas: AppQuotas) -> None:
        await spend(request, pick(quotas), client_ip(request))

    return spend_per_ip
