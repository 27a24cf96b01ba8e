"""What access leaves behind, removed once of no use (app/auth/retention.py, issue 20): sessions
and tokens expired or revoked, invitations settled and account links used or expired, before
the cutoff; what is still of use stays; each row removed is a delete event of its clinic's
trail; and without --apply nothing goes."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from sqlalchemy import text

from app import cli
from app.audit.service import verify
from app.auth import retention
from app.auth.models import AccountToken, TokenPurpose
from app.kit import crypto
from app.kit.ids import new_id
from fixtures.factories import CredentialFactory, InvitationFactory
from tests.harness.world import World

NOW = dt.datetime.now(dt.UTC)
CUTOFF = NOW - dt.timedelta(days=30)
LONG_AGO = NOW - dt.timedelta(days=200)
LATELY = NOW - dt.timedelta(days=5)


async def ids_in(engine, table: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    async with engine.connect() as connection:
        found = await connection.scalars(
            text(f"SELECT id FROM {table} WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        return set(found)


async def link(world: World, user_id: uuid.UUID, **fields: object) -> uuid.UUID:
    async with world.session(None) as session:
        token = AccountToken(
            user_id=user_id,
            purpose=TokenPurpose.reset_password,
            email="reset.retention@example.org",
            secret_hash=crypto.hash_secret(new_id().hex),
            **fields,
        )
        session.add(token)
        await session.flush()
        return token.id


@pytest.fixture
async def leftovers(world: World):
    clinic = await world.clinic(roles=())
    user = clinic.owner.user.id
    make = world.make
    of_no_use = {
        "credentials": [
            (await make(clinic, CredentialFactory, user_id=user, expires_at=LONG_AGO)).id,
            (
                await make(
                    clinic, CredentialFactory, user_id=user, expires_at=NOW, revoked_at=LONG_AGO
                )
            ).id,
        ],
        "invitations": [
            (await make(clinic, InvitationFactory, invited_by=user, expires_at=LONG_AGO)).id,
            (
                await make(
                    clinic,
                    InvitationFactory,
                    invited_by=user,
                    expires_at=NOW + dt.timedelta(days=1),
                    accepted_at=LONG_AGO,
                )
            ).id,
        ],
        "account_tokens": [
            await link(world, user, expires_at=LONG_AGO),
            await link(world, user, expires_at=NOW, used_at=LONG_AGO),
        ],
    }
    of_use = {
        "credentials": [
            (await make(clinic, CredentialFactory, user_id=user, expires_at=LATELY)).id,  # lately
            (await make(clinic, CredentialFactory, user_id=user)).id,
        ],
        "invitations": [(await make(clinic, InvitationFactory, invited_by=user)).id],
        "account_tokens": [await link(world, user, expires_at=NOW + dt.timedelta(minutes=30))],
    }
    return clinic, of_no_use, of_use


async def test_what_is_of_no_more_use_goes_what_is_stays_and_the_trail_records_each_removal(
    world: World, database, superuser_engine, leftovers, monkeypatch
) -> None:
    clinic, of_no_use, of_use = leftovers
    monkeypatch.setattr(retention, "BATCH", 1)  # a batch at a time, each a transaction
    every = {table: of_no_use[table] + of_use[table] for table in of_no_use}

    counted = await retention.purge(database.backup_url, database.owner_url, CUTOFF, apply=False)
    assert {p.table: p.rows for p in counted} == {t: len(ids) for t, ids in of_no_use.items()}
    for table, ids in every.items():
        assert await ids_in(superuser_engine, table, ids) == set(ids)  # a dry run

    done = await retention.purge(database.backup_url, database.owner_url, CUTOFF, apply=True)
    assert {p.table: (p.rows, p.clinics) for p in done} == {
        "credentials": (2, 1),
        "invitations": (2, 1),
        "account_tokens": (2, 0),
    }
    for table in every:
        assert await ids_in(superuser_engine, table, every[table]) == set(of_use[table])

    async with superuser_engine.connect() as connection:
        removed = await connection.execute(
            text(
                "SELECT object_type, object_id, action FROM audit_events"
                " WHERE tenant_id = :c AND change = 'delete'"
            ),
            {"c": clinic.id},
        )
        assert {(row.object_type, row.object_id, row.action) for row in removed} == {
            (table, row_id, "job:retention")
            for table in ("credentials", "invitations")
            for row_id in of_no_use[table]
        }
        assert (await verify(connection, clinic.id)).broken is None

    again = await retention.purge(database.backup_url, database.owner_url, CUTOFF, apply=True)
    assert [p.rows for p in again] == [0, 0, 0]


async def test_vetify_retention_counts_unless_applied(
    superuser_engine, cli_env, capsys, leftovers
) -> None:
    _, of_no_use, _ = leftovers

    await asyncio.to_thread(cli.main, ["retention"])
    said = capsys.readouterr()
    assert "credentials: 2 rows in 1 clinics would be removed" in said.out
    assert "a dry run" in said.err
    assert await ids_in(superuser_engine, "credentials", of_no_use["credentials"])

    await asyncio.to_thread(cli.main, ["retention", "--apply"])
    assert "account_tokens: 2 rows removed" in capsys.readouterr().out
    assert not await ids_in(superuser_engine, "credentials", of_no_use["credentials"])
