"""Operators' view of the Stripe event inbox (``vetify billing ...``): what failed and why, a
metric to alert on, and replay."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.billing.intake import APPLY_STRIPE_EVENT
from app.billing.models import EventStatus, StripeEvent
from app.db.session import create_engine
from app.queue import enqueue
from app.settings import Settings

METRIC = "vetify_stripe_events"


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="billing_command", required=True)
    events = commands.add_parser("events", help="list events (newest first)")
    events.add_argument("--status", choices=[status.value for status in EventStatus])
    events.add_argument("--limit", type=int, default=50)
    commands.add_parser(
        "metrics", help=f"{METRIC}{{status=...}} in Prometheus text format (textfile collector)"
    )
    replay = commands.add_parser("replay", help="apply an event again (after fixing the cause)")
    replay.add_argument("event_id")


async def run(settings: Settings, args: argparse.Namespace) -> str:
    engine = create_engine(settings)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            if args.billing_command == "events":
                return format_events(await events(session, args.status, args.limit))
            if args.billing_command == "metrics":
                return metrics(await counts(session))
            return await replay(session, args.event_id)
    finally:
        await engine.dispose()


async def events(session: AsyncSession, status: str | None, limit: int) -> list[StripeEvent]:
    statement = select(StripeEvent).order_by(StripeEvent.received_at.desc()).limit(limit)
    if status:
        statement = statement.where(StripeEvent.status == EventStatus(status))
    return list((await session.scalars(statement)).all())


def format_events(found: list[StripeEvent]) -> str:
    if not found:
        return "no events"
    lines = [f"{'event':<32} {'type':<40} {'status':<10} attempts  received / last error"]
    for event in found:
        lines.append(
            f"{event.id:<32} {event.type:<40} {event.status.value:<10} {event.attempts:>8}"
            f"  {event.received_at:%Y-%m-%d %H:%M:%S}"
        )
        if event.last_error:
            lines.append(f"    error: {event.last_error}")
        if event.note:
            lines.append(f"    note: {event.note}")
    return "\n".join(lines)


async def counts(session: AsyncSession) -> dict[EventStatus, int]:
    rows = await session.execute(
        select(StripeEvent.status, func.count()).group_by(StripeEvent.status)
    )
    found: dict[Any, int] = {status: count for status, count in rows.all()}
    return {status: found.get(status, 0) for status in EventStatus}


def metrics(by_status: dict[EventStatus, int]) -> str:
    lines = [
        f"# HELP {METRIC} Stripe events received, by processing status (failed: needs replay).",
        f"# TYPE {METRIC} gauge",
    ]
    lines += [f'{METRIC}{{status="{status.value}"}} {count}' for status, count in by_status.items()]
    return "\n".join(lines)


async def replay(session: AsyncSession, event_id: str) -> str:
    """Queue the event again, whatever its status: the handler is idempotent (it syncs from
    Stripe), so replaying a processed event is harmless."""
    event = await session.get(StripeEvent, event_id, with_for_update=True)
    if event is None:
        raise SystemExit(f"vetify billing replay: no event {event_id}")
    event.status = EventStatus.pending
    job = await enqueue(session, APPLY_STRIPE_EVENT, event_id=event_id)
    return f"event {event_id} queued again (job {job}); `vetify worker` applies it"
