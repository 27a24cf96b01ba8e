"""Security events into the audit trail (ADR 0027, issue 20): log-ins and their failures,
lockouts, second factors, tokens, unlocks, refusals of a permission or of a webhook's signature.

The event stream (:mod:`app.kit.events`) tells :class:`SecurityTrail` of each event a request
raises; before the request's answer leaves (or, if the app failed before answering, when it
ends), they are written, each clinic's in one short transaction of its own:

* an event that names a clinic (the actor's, or the one logged into) is the next event of that
  clinic's chain, ``change = 'security'``, with its ``event`` and ``outcome``;
* one that names none (a log-in refused, an account locked: accounts are not a clinic's) is a
  row of ``security_events``, which the service may insert into but not read.

In transactions of their own, because most are refusals, whose request's transaction is rolled
back: a refusal is written whatever the answer. An event that says something was done (a log-in,
a token made, a role changed) is written only if the answer is a success, which the request's
commit came before (app/db/session.py): never an event for a change that was rolled back. The
change itself (a token's credential made) is in the trail too, in its request's transaction, as
every change is. Written before the answer, so whoever has the answer finds the event recorded.
If the database refuses the write, the answer still goes out and the failure is logged with the
events' names (the log stream carries each event already).

Not written: ``rate_limited`` and any event of a request answered 429 (a flood of refusals must
not become a flood of writes: logs and metrics count them) and events raised outside a request
(``production_settings_refused``, raised before the service has a database).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.audit import trail
from app.audit.models import SecurityEventRecord
from app.db.base import Base
from app.db.session import role_engine
from app.db.tenancy import enter_tenant
from app.kit import context
from app.kit.events import REFUSALS, SecurityEvent, subscribe
from app.observability.logs import redacted

log = logging.getLogger("vetify.audit")

NOT_RECORDED = frozenset({SecurityEvent.rate_limited, SecurityEvent.production_settings_refused})
RECORDED = frozenset(SecurityEvent) - NOT_RECORDED

_NAMED = frozenset(
    {"event", "outcome", "user_id", "credential_id", "clinic_id", "client_ip", "role", "action"}
)
"""What every event may carry about its actor; the rest of its fields are its details."""
_SUBJECTS = (("token_id", "credentials"), ("target_user_id", "users"), ("user_id", "users"))
"""Which object an event is about: the first of these fields it names, as a row of this table."""
SECURITY_EVENTS = Base.metadata.tables[SecurityEventRecord.__tablename__]


@dataclass(frozen=True, slots=True)
class Raised:
    """One event as it will be written: its clinic (None: no clinic's), actor and subject."""

    event: str
    outcome: str
    clinic_id: uuid.UUID | None
    who: dict[str, Any]
    object_type: str
    object_id: uuid.UUID | None
    details: dict[str, Any]

    def note(self, clinic_id: uuid.UUID) -> trail.Note:
        return trail.Note(
            tenant_id=clinic_id,
            object_type=self.object_type,
            object_id=self.object_id,
            change="security",
            fields=(),
            who=self.who,
            event=self.event,
            outcome=self.outcome,
        )

    def row(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "outcome": self.outcome,
            "user_id": self.who.get("user_id"),
            "credential_id": self.who.get("credential_id"),
            "action": self.who.get("action"),
            "client_ip": self.who.get("client_ip"),
            "user_agent": self.who.get("user_agent"),
            "request_id": self.who.get("request_id"),
            "details": {
                "object_type": self.object_type,
                "object_id": None if self.object_id is None else str(self.object_id),
                **self.details,
            },
        }


def raised(event: SecurityEvent, fields: dict[str, Any]) -> Raised:
    """``event`` with the fields the stream gave it, over the request's actor and origin."""
    who = trail.who()
    for key in ("user_id", "credential_id"):
        if fields.get(key) is not None:
            who[key] = _id(fields[key])
    for key in ("role", "action"):
        if fields.get(key) is not None:
            who[key] = str(fields[key])
    if fields.get("client_ip") is not None:  # as the trail stores one, or none (it may be forged)
        who["client_ip"] = context.address(str(fields["client_ip"]))
    clinic_id = _id(fields.get("clinic_id"))
    object_type, object_id = next(
        ((table, _id(fields[key])) for key, table in _SUBJECTS if fields.get(key) is not None),
        ("clinics", clinic_id),
    )
    return Raised(
        event=str(event),
        outcome=str(fields.get("outcome", "")),
        clinic_id=clinic_id,
        who=who,
        object_type=object_type,
        object_id=object_id,
        # Ids, counts and names of policies; redacted as the logs are, should a caller ever pass
        # more (an address, a code), since the trail keeps what it is given for years.
        details=redacted({key: value for key, value in fields.items() if key not in _NAMED}),
    )


def _id(value: Any) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(str(value))


_pending: ContextVar[list[Raised] | None] = ContextVar("vetify_security_pending", default=None)
_listening = False


def _remember(event: SecurityEvent, fields: dict[str, Any]) -> None:
    pending = _pending.get()
    if pending is not None and event in RECORDED:
        pending.append(raised(event, fields))


def listen() -> None:
    """Hear the process's security events from now on (once, however many apps it creates)."""
    global _listening  # the process's one subscription, as the event stream is the process's
    if not _listening:
        subscribe(_remember)
        _listening = True


async def record(sessions: async_sessionmaker[AsyncSession], events: list[Raised]) -> None:
    """``events`` into the trail: each clinic's in its chain, the others into
    ``security_events``, a transaction for each. A failure is logged, not raised."""
    by_clinic: dict[uuid.UUID | None, list[Raised]] = {}
    for one in events:
        by_clinic.setdefault(one.clinic_id, []).append(one)
    try:
        for clinic_id, raised_there in by_clinic.items():
            async with sessions() as session, session.begin():
                if clinic_id is None:
                    await session.execute(insert(SECURITY_EVENTS), [e.row() for e in raised_there])
                    continue
                await enter_tenant(session, clinic_id)
                await session.run_sync(
                    trail.append, clinic_id, [e.note(clinic_id) for e in raised_there]
                )
    except Exception:
        log.exception(
            "security events not recorded in the audit trail",
            extra={"events": [one.event for one in events]},
        )


class SecurityTrail:
    """ASGI middleware, around the routes: the request's origin (address, User-Agent) into its
    context, for the trail; and the security events it raises recorded before its answer leaves
    (:func:`record`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        listen()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Where the request came from, for its events and its changes' (the proxy middleware,
        # further out, has already put a trusted proxy's client in ``client``).
        peer = scope.get("client")
        agent = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
        context.update(
            client_ip=context.address(peer[0] if peer else None),
            user_agent=context.kept(agent.decode("latin-1")),
        )
        pending: list[Raised] = []
        status = 500  # until an answer says otherwise: the app failed

        async def take() -> None:
            done = status < 400  # the request's transaction committed
            # A request the rate limiter refused writes nothing: a flood of refusals must not
            # become a flood of rows (the limiter's refusals are counted by metrics and logs).
            flood = status == HTTPStatus.TOO_MANY_REQUESTS
            taken = [one for one in pending if not flood and (done or one.event in REFUSALS)]
            pending.clear()
            # An app started without its database (none to write to) keeps them in the log.
            sessions = getattr(scope["app"].state, "sessions", None)
            if taken and sessions is not None:
                await record(sessions, taken)

        async def recorded_first(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                await take()
            await send(message)

        reset = _pending.set(pending)
        try:
            await self.app(scope, receive, recorded_first)
        finally:
            _pending.reset(reset)
            await take()  # raised after the answer began, or with no answer (the app failed)


async def lines_since(url: str, moment: dt.datetime) -> AsyncIterator[str]:
    """The events of no clinic recorded from ``moment`` on, oldest first, each a JSON line
    (``vetify audit security-events``), read with ``url``: the backup role's, as the service's
    may not read them (any driver named in it is asyncpg's)."""
    engine = role_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.stream(
                select(SECURITY_EVENTS)
                .where(SECURITY_EVENTS.c.created_at >= moment)
                .order_by(SECURITY_EVENTS.c.created_at, SECURITY_EVENTS.c.id)
            )
            async for row in rows.mappings():
                yield json.dumps(dict(row), default=str, ensure_ascii=False)
    finally:
        await engine.dispose()
