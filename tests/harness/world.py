"""Arranging data for tests: clinics with staff and tokens, factory rows in a clinic."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.attachments import service as attachments
from app.attachments.models import Attachment
from app.auth import lifecycle, mfa
from app.auth import service as auth_service
from app.auth.models import CredentialKind, Membership, Role, TokenPurpose, User
from app.db.tenancy import InClinic, enter_tenant
from app.keys import service as keys
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.kit.storage import Storage, new_key, staging_file, storage_from
from app.privacy import exports
from app.privacy.models import ClientExport
from app.records.models import MedicalRecord
from app.settings import Settings
from fixtures import files
from fixtures.clinics import ClinicSetup, create_clinic
from fixtures.factories import (
    AttachmentFactory,
    ClientExportFactory,
    CustomerFactory,
    MedicalRecordFactory,
    PetFactory,
    create,
)

T = TypeVar("T")


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
        self.settings = settings
        keys.configure(keys.wrapper_from(settings))  # as the app does at start-up

    @asynccontextmanager
    async def session(self, clinic_id: uuid.UUID | None = None) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            if clinic_id is not None:
                await enter_tenant(session, clinic_id)
            yield session

    async def clinic(self, roles: tuple[Role, ...] = tuple(Role), **fields: object) -> ClinicWorld:
        async with self.session() as session:
            setup = await create_clinic(session, roles, **fields)  # entered in the new clinic
            memberships = {
                m.user_id: m
                for m in await session.scalars(
                    select(Membership).where(Membership.tenant_id == setup.clinic.id)
                )
            }
            actors = {
                role: self._as_actor(
                    await self._issue(
                        session, user, CredentialKind.api_token, memberships[user.id]
                    ),
                    user,
                )
                for role, user in setup.staff.items()
            }
        return ClinicWorld(setup, actors)

    async def actor(self, clinic_id: uuid.UUID, user: User) -> Actor:
        """An API token for ``user`` acting in the clinic (of which they must be a member)."""
        async with self.session(clinic_id) as session:
            return await self._actor(session, clinic_id, user)

    async def login(self, actor: Actor, *, ago: dt.timedelta = dt.timedelta(0)) -> str:
        """A login session for ``actor``'s user in their clinic, logged in ``ago`` and used just
        now: the cookie's value."""
        async with self.session(actor.clinic_id) as session:
            issued = await self._issue(session, actor.user, CredentialKind.session)
            if ago:
                issued.credential.created_at = utcnow() - ago
        return issued.secret

    async def step_up(self, actor: Actor) -> str:
        """A session of ``actor`` logged in just now with their second factor (enrolled first if
        they had none), as changing a security setting needs: the cookie's value."""
        async with self.session() as session:
            enrolled = (await session.get_one(User, actor.user.id)).mfa_enabled
        if not enrolled:
            await self.enrol_mfa(actor.user)
        return await self.login(actor)

    async def _issue(
        self,
        session: AsyncSession,
        user: User,
        kind: CredentialKind,
        membership: Membership | None = None,
    ) -> auth_service.Issued:
        """A credential of ``kind`` for ``user`` in the clinic of ``membership`` (by default,
        their one membership the session sees)."""
        if membership is None:
            membership = (
                await session.scalars(select(Membership).where(Membership.user_id == user.id))
            ).one()
        return await auth_service.issue(session, self.settings, membership, kind, name="tests")

    @staticmethod
    def _as_actor(issued: auth_service.Issued, user: User) -> Actor:
        return Actor(user, issued.principal.clinic_id, issued.principal.role, issued.secret)

    async def _actor(self, session: AsyncSession, clinic_id: uuid.UUID, user: User) -> Actor:
        await enter_tenant(session, clinic_id)
        return self._as_actor(await self._issue(session, user, CredentialKind.api_token), user)

    async def enrol_mfa(
        self, user: User, *, confirmed: bool = True, secret: str | None = None
    ) -> str:
        """Give ``user`` a TOTP secret (pending, or on): the secret, for making codes."""
        secret = secret or mfa.new_secret()
        async with self.session() as session:
            await session.execute(
                update(User)
                .where(User.id == user.id)
                .values(
                    totp_secret_sealed=await mfa.seal_secret(session, user.id, secret),
                    totp_enabled_at=utcnow() if confirmed else None,
                    totp_last_step=None,
                )
            )
        return secret

    async def account_link(self, user: User, purpose: TokenPurpose) -> str:
        """The secret of a live link for ``user`` (what the job would mail them)."""
        async with self.session() as session:
            return await lifecycle.new_link(session, self.settings, user, purpose)

    async def unverify(self, user: User) -> None:
        """``user``'s address as if never verified."""
        async with self.session() as session:
            await session.execute(
                update(User).where(User.id == user.id).values(email_verified_at=None)
            )

    async def set_password_hash(self, user: User, password_hash: str) -> None:
        async with self.session() as session:
            await session.execute(
                update(User).where(User.id == user.id).values(password_hash=password_hash)
            )

    async def make(self, clinic: ClinicWorld, factory_class: Any, **fields: Any) -> Any:
        async with self.session(clinic.id) as session:
            return await create(session, factory_class, **fields)

    async def made(
        self, clinic: ClinicWorld, creator: Callable[..., Awaitable[T]], **fields: Any
    ) -> T:
        """What ``creator(session, **fields)`` makes in the clinic (``create_customer``,
        ``create_record``: rows with sealed fields)."""
        async with self.session(clinic.id) as session:
            return await creator(session, **fields)

    async def record(self, clinic: ClinicWorld) -> MedicalRecord:
        """A medical record by the clinic's vet, of a new owner's new pet."""
        customer = await self.make(clinic, CustomerFactory)
        pet = await self.make(clinic, PetFactory, customer_id=customer.id)
        record: MedicalRecord = await self.make(
            clinic, MedicalRecordFactory, pet_id=pet.id, author_id=clinic.actors[Role.vet].user.id
        )
        return record

    async def client_export(self, clinic: ClinicWorld, customer_id: uuid.UUID) -> ClientExport:
        """A client's export, built as the job builds it: ready to be downloaded (once)."""
        return await self._export(clinic, customer_id)

    async def clinic_export(self, clinic: ClinicWorld) -> ClientExport:
        """The whole clinic's export, built as the job builds it: ready to be downloaded."""
        return await self._export(clinic, None)

    async def _export(self, clinic: ClinicWorld, customer_id: uuid.UUID | None) -> ClientExport:
        async with self.session(clinic.id) as session:
            export: ClientExport = await create(
                session,
                ClientExportFactory,
                customer_id=customer_id,
                requested_by=clinic.owner.user.id,
            )
        valid = dt.timedelta(hours=self.settings.export_valid_hours)
        tenant = InClinic(clinic.id)
        assert await exports.build(self._sessions, tenant, self.storage, export.id, valid)
        async with self.session(clinic.id) as session:
            built: ClientExport = await exports.get(
                session, tenant, export.id, whole=customer_id is None
            )
        return built  # ready, with its file

    @property
    def storage(self) -> Storage:
        """The app's file storage, as the settings configure it."""
        return storage_from(self.settings)

    async def attach(
        self,
        clinic: ClinicWorld,
        record_id: uuid.UUID,
        content: bytes = files.PNG,
        *,
        clear: bool = False,
        **fields: Any,
    ) -> Attachment:
        """An attachment on the record: its bytes in storage, sealed as an upload seals them (in
        the clear if ``clear``: as stored before files were sealed), its row through the
        factory."""
        storage = self.storage
        attachment_id, key = new_id(), new_key(clinic.id)
        staged = staging_file(storage)
        staged.write_bytes(content)
        async with self.session(clinic.id) as session:
            sealed_with = None
            if not clear:
                sealed = staging_file(storage)
                sealed_with = await keys.seal_file(
                    session, str(clinic.id), attachments.SEALED_AS, attachment_id, staged, sealed
                )
                staged.unlink()
                staged = sealed
            await storage.put(key, staged)
            attachment: Attachment = await create(
                session,
                AttachmentFactory,
                id=attachment_id,
                record_id=record_id,
                uploaded_by=clinic.owner.user.id,
                storage_key=key,
                size_bytes=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                sealed_with=sealed_with,
                **fields,
            )
        return attachment
