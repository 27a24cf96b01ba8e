"""The credential cache (ADR 0019): a credential resolved once costs its later requests no
statement of their own, and every change to who may act (a revocation, a role, a disabled
account or membership, the clinic's MFA rule, its billing, a trial's end) holds at the very next
request on every process, each with a cache of its own.

Two apps on one database stand for two worker processes: each warms its cache, one (or the
database itself) makes the change, and the other must see it at once: no wait, no retry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.auth.cache import CredentialCache
from app.auth.models import Membership, Role, User
from app.billing.models import BillingAccount, SubscriptionStatus
from app.clinics.models import Clinic
from tests.harness.clock import Clock
from tests.harness.plugin import asgi_client
from tests.harness.statements import counting
from tests.harness.world import Actor, ClinicWorld, World

# Written to hold what the request's identification does with the cache (and the cache).
pytestmark = pytest.mark.mutation_targets(
    "app/auth/deps.py::_identify",
    "app/auth/cache.py::CredentialCache.get",
    "app/auth/cache.py::CredentialCache.put",
    "app/auth/cache.py::CredentialCache.drop",
    "app/auth/cache.py::Known.current",
)

Configured = Callable[..., AbstractAsyncContextManager[FastAPI]]
READ = "/api/v1/pets"
WRITE = "/api/v1/customers"
CUSTOMER = {"first_name": "Ana", "last_name": "Silva", "email": "ana@example.com"}


def cache_of(app: FastAPI) -> CredentialCache:
    cache: CredentialCache = app.state.credentials
    return cache


@asynccontextmanager
async def two_processes(
    app: FastAPI, configured_app: Configured
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of two apps on the same database (two workers)."""
    async with (
        configured_app() as other,
        asgi_client(app) as here,
        asgi_client(other) as there,
    ):
        yield here, there


async def warm(actor: Actor, *clients: httpx.AsyncClient) -> None:
    for http in clients:
        for _ in range(2):
            assert (await http.get(READ, headers=actor.headers)).status_code == 200


async def test_a_known_credential_costs_its_request_only_entering_the_clinic(
    app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    clinic = await world.clinic((Role.owner,))
    first = await client.get(READ, headers=clinic.owner.headers)
    assert first.status_code == 200
    with counting() as counted:
        second = await client.get(READ, headers=clinic.owner.headers)
    assert second.status_code == 200
    assert second.json() == first.json()
    # Entering the clinic (which answers the epochs) and the page: no credential, membership,
    # user or billing lookup.
    assert counted.total == 2
    assert (cache_of(app).hits, cache_of(app).misses) == (1, 1)


async def test_a_cache_of_size_zero_resolves_every_request(
    configured_app: Configured, world: World
) -> None:
    clinic = await world.clinic((Role.owner,))
    async with configured_app(credential_cache_size=0) as app, asgi_client(app) as http:
        for _ in range(2):
            with counting() as counted:
                assert (await http.get(READ, headers=clinic.owner.headers)).status_code == 200
            assert counted.total == 4  # enter, the credential, the standing, the page
        assert len(cache_of(app)) == 0


async def test_every_process_refuses_a_revoked_token_at_its_next_request(
    app: FastAPI, configured_app: Configured, world: World
) -> None:
    clinic = await world.clinic((Role.owner,))
    owner = clinic.owner
    async with two_processes(app, configured_app) as (here, there):
        await warm(owner, here, there)
        (token,) = (await here.get("/api/v1/auth/tokens", headers=owner.headers)).json()
        revoked = await here.delete(f"/api/v1/auth/tokens/{token['id']}", headers=owner.headers)
        assert revoked.status_code == 204
        for http in (there, here):
            assert (await http.get(READ, headers=owner.headers)).status_code == 401
    assert len(cache_of(app)) == 0  # a refused credential is forgotten, not kept to the LRU's end


Change = Callable[[World, ClinicWorld, Actor], Awaitable[None]]


async def _lower_role(world: World, clinic: ClinicWorld, member: Actor) -> None:
    async with world.session(clinic.id) as session:
        await session.execute(
            update(Membership)
            .where(Membership.user_id == member.user.id)
            .values(role=Role.read_only)
        )


async def _end_membership(world: World, clinic: ClinicWorld, member: Actor) -> None:
    async with world.session(clinic.id) as session:
        await session.execute(
            update(Membership).where(Membership.user_id == member.user.id).values(active=False)
        )


async def _disable_account(world: World, _clinic: ClinicWorld, member: Actor) -> None:
    async with world.session() as session:
        await session.execute(update(User).where(User.id == member.user.id).values(active=False))


async def _require_mfa(world: World, clinic: ClinicWorld, _member: Actor) -> None:
    async with world.session(clinic.id) as session:
        await session.execute(update(Clinic).where(Clinic.id == clinic.id).values(require_mfa=True))


async def _stop_paying(world: World, clinic: ClinicWorld, _member: Actor) -> None:
    async with world.session(clinic.id) as session:
        await session.execute(
            update(BillingAccount)
            .where(BillingAccount.tenant_id == clinic.id)
            .values(status=SubscriptionStatus.canceled)
        )


CHANGES: dict[str, tuple[Change, int]] = {
    "a role lowered to read-only": (_lower_role, 403),
    "a membership ended": (_end_membership, 401),
    "an account disabled": (_disable_account, 401),
    "the clinic requiring a second factor": (_require_mfa, 403),
    "a subscription cancelled": (_stop_paying, 402),
}
"""A change made straight in the database (as a job, an operator or another process would),
and what a member's write answers at once afterwards."""


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
async def test_a_change_to_who_may_act_holds_at_once_on_a_process_that_knew_the_caller(
    change: str, app: FastAPI, client: httpx.AsyncClient, world: World
) -> None:
    make, answer = CHANGES[change]
    clinic = await world.clinic((Role.owner, Role.vet))
    vet = clinic.actors[Role.vet]
    await warm(vet, client)
    assert len(cache_of(app)) == 1
    await make(world, clinic, vet)
    refused = await client.post(WRITE, json=CUSTOMER, headers=vet.headers)
    assert refused.status_code == answer, refused.text
    # A credential no longer valid is forgotten; one still valid (refused this write) is kept.
    assert len(cache_of(app)) == (0 if answer == 401 else 1)


async def test_a_touch_of_the_last_use_keeps_the_cached_credential(
    app: FastAPI, client: httpx.AsyncClient, world: World, clock: Clock
) -> None:
    """A credential's use is written once a minute; that write must not cost the cache."""
    clinic = await world.clinic((Role.owner,))
    await warm(clinic.owner, client)
    clock.advance(dt.timedelta(minutes=2))
    assert (await client.get(READ, headers=clinic.owner.headers)).status_code == 200
    with counting() as counted:
        assert (await client.get(READ, headers=clinic.owner.headers)).status_code == 200
    assert counted.total == 2


async def test_a_trial_ending_makes_the_clinic_read_only_and_a_clock_set_back_undoes_it(
    client: httpx.AsyncClient, world: World, clock: Clock
) -> None:
    clinic = await world.clinic((Role.owner,))
    async with world.session(clinic.id) as session:
        await session.execute(
            update(BillingAccount)
            .where(BillingAccount.tenant_id == clinic.id)
            .values(
                status=SubscriptionStatus.trialing,
                stripe_subscription_id=None,
                trial_ends_at=clock.now + dt.timedelta(hours=1),
            )
        )
    created = await client.post(WRITE, json=CUSTOMER, headers=clinic.owner.headers)
    assert created.status_code == 201, created.text
    clock.advance(dt.timedelta(hours=1))
    refused = await client.post(WRITE, json=CUSTOMER, headers=clinic.owner.headers)
    assert refused.status_code == 402, refused.text
    # The clock set back (an NTP step): the trial runs again, cached or not.
    clock.advance(-dt.timedelta(minutes=1))
    created = await client.post(WRITE, json=CUSTOMER, headers=clinic.owner.headers)
    assert created.status_code == 201, created.text


async def test_an_idle_session_cached_here_is_judged_by_its_use_elsewhere(
    app: FastAPI, configured_app: Configured, world: World, clock: Clock
) -> None:
    """A login session used only on one process stays alive on the other, whose cache last saw
    it long ago: the idle rule reads the database before refusing."""
    clinic = await world.clinic((Role.owner,))
    cookie = {"Cookie": f"vetify_session={await world.login(clinic.owner)}"}
    idle = dt.timedelta(minutes=world.settings.session_idle_timeout_minutes)
    async with two_processes(app, configured_app) as (here, there):
        for http in (here, there):
            assert (await http.get(READ, headers=cookie)).status_code == 200
        for _ in range(3):  # used on one process only, within the idle timeout each time
            clock.advance(idle * 0.6)
            assert (await here.get(READ, headers=cookie)).status_code == 200
        assert (await there.get(READ, headers=cookie)).status_code == 200
        clock.advance(idle + dt.timedelta(minutes=1))
        for http in (there, here):
            assert (await http.get(READ, headers=cookie)).status_code == 401
    assert len(cache_of(app)) == 0  # idle is refused, and forgotten
