"""Code that runs outside a request sets its clinic itself and cannot reach another clinic.

Entry points today, each with its test here:

* the demo seed (``vetify demo``, and the live-server harness): ``seed_demo`` in a session of
  the service's role, as app/cli.py runs it.
* rate-limit buckets in Redis: a clinic's quota is kept under its own id, so one clinic's
  traffic never spends another's (test_rate_limits.py floods one and checks the other).

``vetify migrate`` is not one: it runs DDL as the owner role and reads no clinic's rows. The job
worker and webhook handlers add their tests here when they arrive; so do caches, file storage
keys, each proving its keys name the clinic.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.db.base import Base, TenantScoped
from app.db.tenancy import current_tenant
from fixtures.demo import seed_demo
from tests.security.estate import Estate, rows_of, tenant_tables

MODELS = [m.class_ for m in Base.registry.mappers if issubclass(m.class_, TenantScoped)]


async def test_the_demo_seed_acts_only_in_its_own_clinic(
    app_engine, superuser_engine, estates: tuple[Estate, Estate]
) -> None:
    others = [estate.clinic.id for estate in estates]
    before = [await rows_of(superuser_engine, clinic) for clinic in others]

    async with async_sessionmaker(app_engine)() as session, session.begin():
        login = await seed_demo(session, customers=3)
        demo = current_tenant(session)
        # Whatever the seed's session would read next, it reads in the demo clinic alone.
        reachable = {
            model.__name__: {row.tenant_id for row in (await session.scalars(select(model)))}
            for model in MODELS
        }
        raw = (await session.execute(text("SELECT DISTINCT tenant_id FROM pets"))).scalars()
        raw_tenants = set(raw.all())

    assert login.created
    assert demo is not None
    assert demo not in others
    assert all(tenants <= {demo} for tenants in reachable.values()), reachable
    assert raw_tenants == {demo}
    assert [await rows_of(superuser_engine, clinic) for clinic in others] == before
    async with superuser_engine.connect() as connection:
        for table in await tenant_tables(superuser_engine):
            strays = await connection.scalar(
                text(f'SELECT count(*) FROM "{table}" WHERE tenant_id <> ALL(:known)'),
                {"known": [demo, *others]},
            )
            assert strays == 0, f"{table}: rows of no known clinic"


async def test_rate_limit_buckets_name_their_clinic(client, world, redis_server) -> None:
    first, second = await world.clinic(), await world.clinic()
    store = Redis.from_url(redis_server.url)
    try:

        async def clinics_with_buckets() -> set[str]:
            keys = await store.keys("vetify:rl:*/clinic/*")
            ids = {str(first.id), str(second.id)}
            return {i for i in ids for key in keys if f"/clinic/{i}/".encode() in key}

        await client.get("/api/v1/auth/me", headers=first.owner.headers)
        after_first = await clinics_with_buckets()
        await client.get("/api/v1/auth/me", headers=second.owner.headers)
        after_second = await clinics_with_buckets()
    finally:
        await store.aclose()
    assert after_first == {str(first.id)}
    assert after_second == {str(first.id), str(second.id)}
