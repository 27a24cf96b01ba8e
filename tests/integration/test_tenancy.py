"""Two walls between clinics, each proven on its own.

* The application wall: ORM statements are scoped to the session's clinic even when the
  database would show everything (a superuser connection, where RLS does not apply).
* The database wall: raw SQL as the service's role sees only the clinic in ``app.tenant_id``
  and nothing without it, whatever the query asks for.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.db.base import Base
from app.db.tenancy import enter_tenant
from app.pets.models import Pet
from fixtures.factories import CustomerFactory, PetFactory

TENANT_TABLES = sorted(
    table.name for table in Base.metadata.sorted_tables if "tenant_id" in table.columns
)


async def _clinic_with_pet(world):
    clinic = await world.clinic()
    customer = await world.make(clinic, CustomerFactory)
    pet = await world.make(clinic, PetFactory, customer_id=customer.id)
    return clinic, pet


async def _row(engine: AsyncEngine, table: str, row_id) -> dict:
    async with engine.connect() as connection:
        result = await connection.execute(
            text(f"SELECT * FROM {table} WHERE id = :id"), {"id": row_id}
        )
        return dict(result.mappings().one())


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("PATCH", {"name": "Stolen"}), ("DELETE", None)],
)
async def test_another_clinics_pet_is_not_found_and_unchanged(
    client, world, superuser_engine, method, body
):
    clinic_a, _ = await _clinic_with_pet(world)
    _, pet_b = await _clinic_with_pet(world)
    before = await _row(superuser_engine, "pets", pet_b.id)

    foreign = await client.request(
        method, f"/api/v1/pets/{pet_b.id}", json=body, headers=clinic_a.owner.headers
    )
    missing = await client.request(
        method,
        "/api/v1/pets/01900000-0000-7000-8000-000000000000",
        json=body,
        headers=clinic_a.owner.headers,
    )

    assert foreign.status_code == 404
    assert foreign.headers["content-type"] == "application/problem+json"
    # Exactly as a missing id: nothing tells the caller the pet exists elsewhere.
    assert {k: v for k, v in foreign.json().items() if k != "instance"} == {
        k: v for k, v in missing.json().items() if k != "instance"
    }
    assert await _row(superuser_engine, "pets", pet_b.id) == before


async def test_lists_show_only_the_callers_clinic(client, world):
    clinic_a, pet_a = await _clinic_with_pet(world)
    clinic_b, pet_b = await _clinic_with_pet(world)

    pets = await client.get("/api/v1/pets", headers=clinic_a.owner.headers)
    customers = await client.get(
        "/api/v1/customers", params={"q": "a"}, headers=clinic_a.owner.headers
    )
    staff = await client.get("/api/v1/staff", headers=clinic_a.owner.headers)

    assert [p["id"] for p in pets.json()["items"]] == [str(pet_a.id)]
    assert str(pet_b.customer_id) not in {c["id"] for c in customers.json()["items"]}
    staff_ids = {m["user_id"] for m in staff.json()["items"]}
    assert staff_ids == {str(u.id) for u in clinic_a.setup.staff.values()}
    assert not staff_ids & {str(u.id) for u in clinic_b.setup.staff.values()}


async def test_a_filter_naming_another_clinics_customer_finds_nothing(client, world):
    clinic_a, _ = await _clinic_with_pet(world)
    _, pet_b = await _clinic_with_pet(world)

    response = await client.get(
        "/api/v1/pets",
        params={"customer_id": str(pet_b.customer_id)},
        headers=clinic_a.owner.headers,
    )

    assert response.status_code == 200
    assert response.json()["items"] == []


async def test_a_pet_cannot_be_registered_for_another_clinics_customer(
    client, world, superuser_engine
):
    clinic_a, _ = await _clinic_with_pet(world)
    _, pet_b = await _clinic_with_pet(world)

    response = await client.post(
        "/api/v1/pets",
        json={"customer_id": str(pet_b.customer_id), "name": "Trojan", "species": "cat"},
        headers=clinic_a.owner.headers,
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "customer_id"]
    async with superuser_engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM pets WHERE name = 'Trojan'")) == 0


async def test_application_wall_scopes_orm_queries_without_help_from_rls(world, superuser_engine):
    """As superuser RLS is bypassed, so only the application's own filter can hide B's rows."""
    clinic_a, pet_a = await _clinic_with_pet(world)
    _, pet_b = await _clinic_with_pet(world)

    async with async_sessionmaker(superuser_engine)() as session, session.begin():
        # Raw SQL on this connection sees both clinics' pets: the database is not filtering.
        every_pet = set((await session.scalars(text("SELECT id FROM pets"))).all())
        assert {pet_a.id, pet_b.id} <= every_pet
        await enter_tenant(session, clinic_a.id)
        seen = {p.id for p in (await session.scalars(select(Pet))).all()}
        by_id = (await session.scalars(select(Pet).where(Pet.id == pet_b.id))).one_or_none()

    assert seen == {pet_a.id}
    assert by_id is None


async def test_application_wall_hides_everything_without_a_clinic(world, superuser_engine):
    await _clinic_with_pet(world)
    async with async_sessionmaker(superuser_engine)() as session, session.begin():
        assert (await session.scalars(select(Pet))).all() == []


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_database_wall_raw_sql_sees_only_the_current_clinic(
    world, app_engine, superuser_engine, table
):
    clinic_a, _ = await _clinic_with_pet(world)
    clinic_b, _ = await _clinic_with_pet(world)
    async with superuser_engine.connect() as connection:
        total_b = await connection.scalar(
            text(f"SELECT count(*) FROM {table} WHERE tenant_id = :b"), {"b": clinic_b.id}
        )

    async with app_engine.connect() as connection, connection.begin():
        no_context = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(clinic_a.id)}
        )
        foreign = await connection.scalar(
            text(f"SELECT count(*) FROM {table} WHERE tenant_id <> :a"), {"a": clinic_a.id}
        )

    assert no_context == 0
    assert foreign == 0
    # The check above is only meaningful where B has rows to hide.
    if table in {"locations", "memberships", "credentials", "customers", "pets"}:
        assert total_b > 0


async def test_database_wall_refuses_writing_a_row_into_another_clinic(world, app_engine):
    clinic_a, _ = await _clinic_with_pet(world)
    clinic_b, _ = await _clinic_with_pet(world)

    async with app_engine.connect() as connection:
        await connection.begin()
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(clinic_a.id)}
        )
        with pytest.raises(DBAPIError, match="row-level security"):
            await connection.execute(
                text(
                    "INSERT INTO customers"
                    " (id, tenant_id, first_name, last_name, preferred_language)"
                    " VALUES (gen_random_uuid(), :b, 'Eve', 'Intruder', 'en')"
                ),
                {"b": clinic_b.id},
            )
        await connection.rollback()


async def test_database_wall_hides_other_clinics_from_the_clinics_table(world, app_engine):
    clinic_a, _ = await _clinic_with_pet(world)
    clinic_b, _ = await _clinic_with_pet(world)

    async with app_engine.connect() as connection, connection.begin():
        await connection.execute(
            text("SELECT set_config('app.tenant_id', :id, true)"), {"id": str(clinic_a.id)}
        )
        visible = set((await connection.scalars(text("SELECT id FROM clinics"))).all())

    assert visible == {clinic_a.id}
    assert clinic_b.id not in visible
