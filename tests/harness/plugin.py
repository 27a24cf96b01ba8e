"""The pytest plugin every stage loads: services, databases, the app and clients.

* One PostgreSQL server per test session (provider chosen in :mod:`tests.harness.services`),
  with the service's two roles and a template database migrated once.
* Each test that asks for ``database`` gets its own database cloned from the template
  (``CREATE DATABASE ... TEMPLATE``, a few tens of ms), dropped afterwards.
* ``app`` is the production application (``create_app``) with its lifespan running;
  ``client`` talks to it over ASGI through httpx.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.auth import service as auth_service
from app.auth.models import CredentialKind, Membership, Role, User
from app.db import migrate
from app.db.tenancy import enter_tenant
from app.main import create_app
from app.settings import Environment, Settings
from fixtures.clinics import ClinicSetup, create_clinic
from fixtures.factories import create
from tests.harness.services import PostgresServer, Provider, choose_provider, postgres

OWNER_ROLE = "vetify_owner"
APP_ROLE = "vetify_app"
TEMPLATE = "vetify_template"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_provider_key] = choose_provider()


def pytest_report_header(config: pytest.Config) -> str:
    return f"vetify test services: {config.stash[_provider_key]} provider"


_provider_key = pytest.StashKey[Provider]()


@dataclass(frozen=True)
class Database:
    name: str
    server: PostgresServer

    @property
    def app_url(self) -> str:
        return self.server.url(APP_ROLE, self.name)

    @property
    def owner_url(self) -> str:
        return self.server.url(OWNER_ROLE, self.name)

    @property
    def superuser_url(self) -> str:
        return self.server.url(database=self.name)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    with postgres(pytestconfig.stash[_provider_key]) as server:
        migrate.bootstrap_sync(server.url(), TEMPLATE, OWNER_ROLE, APP_ROLE)
        migrate.upgrade(server.url(OWNER_ROLE, TEMPLATE), APP_ROLE)
        yield server


@pytest.fixture
async def database(postgres_server: PostgresServer) -> AsyncIterator[Database]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_plain(postgres_server.url()))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}" OWNER "{OWNER_ROLE}"')
        yield Database(name, postgres_server)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(database: Database) -> Settings:
    return Settings(
        env=Environment.test,
        database_url=database.app_url,
        database_owner_url=database.owner_url,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        yield http


@pytest.fixture
async def app_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the service's role: row-level security applies."""
    engine = create_async_engine(database.app_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def superuser_engine(database: Database) -> AsyncIterator[AsyncEngine]:
    """Connected as the superuser: sees every row, for checking what really is in the database."""
    engine = create_async_engine(database.superuser_url)
    yield engine
    await engine.dispose()


@dataclass
class Actor:
    """A member of a clinic with an API token: ``headers`` authenticate as them."""

    user: User
    clinic_id: uuid.UUID
    role: Role
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class ClinicWorld:
    setup: ClinicSetup
    actors: dict[Role, Actor]

    @property
    def id(self) -> uuid.UUID:
        return self.setup.clinic.id

    @property
    def owner(self) -> Actor:
        return self.actors[Role.owner]


class World:
    """Arranges data through the factories, as the service's role, committed per block."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._settings = settings

    @asynccontextmanager
    async def session(self, clinic_id: uuid.UUID | None = None) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            if clinic_id is not None:
                await enter_tenant(session, clinic_id)
            yield session

    async def clinic(self, roles: tuple[Role, ...] = tuple(Role), **fields: object) -> ClinicWorld:
        async with self.session() as session:
            setup = await create_clinic(session, roles, **fields)
            actors = {}
            for role, user in setup.staff.items():
                membership = (
                    await session.scalars(select(Membership).where(Membership.user_id == user.id))
                ).one()
                issued = await auth_service.issue(
                    session, self._settings, membership, CredentialKind.api_token, name="tests"
                )
                actors[role] = Actor(user, setup.clinic.id, role, issued.secret)
        return ClinicWorld(setup, actors)

    async def make(self, clinic: ClinicWorld, factory_class: Any, **fields: Any) -> Any:
        async with self.session(clinic.id) as session:
            return await create(session, factory_class, **fields)


@pytest.fixture
def world(app_engine: AsyncEngine, settings: Settings) -> World:
    return World(app_engine, settings)
