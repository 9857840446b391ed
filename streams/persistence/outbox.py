"""Transactional outbox and named leases.

An event the service reports is written in the same transaction as the change
it reports; a relay publishes it afterwards, in order, whenever the broker takes
it. A lease lets exactly one worker at a time do a named job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from streams.messages.codec import encode
from streams.messages.inbox import Feedback
from streams.messages.output_envelope import OutputPayload, encode_event
from streams.messages.outputs import Alert, CommandRejected
from streams.persistence.db import one_of
from streams.persistence.models import OUTBOX, Lease, OutboxMessage


@dataclass(frozen=True)
class Channels:
    """Where the outbox sends what a unit of work reports."""

    events: str  # communication-events (public)
    inbox: str  # the therapist agent's inbox (internal feedback)


@dataclass(frozen=True)
class PendingMessage:
    id: int
    topic: str
    key: str | None
    value: str


def message_row(topic: str, key: str | None, value: bytes | str, now: datetime) -> dict[str, Any]:
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    return {"topic": topic, "key": key, "value": text, "created_at": now}


def inbox_row(channels: Channels, message: Feedback, now: datetime) -> dict[str, Any]:
    """A message to the therapist agent's inbox (internal feedback from the database side)."""
    return message_row(channels.inbox, str(message.therapist_id), encode(message), now)


def add_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert at once (not at flush), so outbox ids follow the order of the rows.
    A Core insert: the ORM's bulk path costs more than the insert itself."""
    if rows:
        session.execute(insert(OUTBOX), list(rows))


def event_row(
    topic: str,
    payload: OutputPayload,
    now: datetime,
    *,
    causation_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An output event (CONTRACT §4) of the type its payload's model is registered
    for, keyed by the payload's therapist; its event_id is fixed now, so a relay that
    publishes it twice publishes the same event. Events about the service itself
    (e.g. an SMTP outage alert) have no therapist: null, no key."""
    value = encode_event(payload, event_id=event_id or uuid.uuid4(), occurred_at=now, causation_id=causation_id)
    therapist_id = payload.therapist_id
    return message_row(topic, None if therapist_id is None else str(therapist_id), value, now)


def command_rejected_row(
    topic: str, command_id: str, command_type: str, therapist_id: int | None, reason: str, now: datetime
) -> dict[str, Any]:
    """``communication.command_rejected``: the command changed nothing, and why."""
    payload = CommandRejected(
        therapist_id=therapist_id, command_id=command_id, command_type=command_type, reason=reason
    )
    return event_row(topic, payload, now, causation_id=command_id)


# The relay's two statements run hundreds of times a second: Core, not the ORM.


def unpublished(session: Session, limit: int) -> list[PendingMessage]:
    rows = session.execute(
        select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.key, OUTBOX.c.value)
        .where(OUTBOX.c.published_at.is_(None))
        .order_by(OUTBOX.c.id)
        .limit(limit)
    )
    return [PendingMessage(*row) for row in rows]


def mark_published(session: Session, ids: Sequence[int], now: datetime) -> None:
    session.execute(
        update(OUTBOX)
        .where(one_of(session, OUTBOX.c.id, ids), OUTBOX.c.published_at.is_(None))
        .values(published_at=now)
    )


def park(session: Session, message_id: int, reason: str, now: datetime, alerts: str) -> None:
    """A message the broker can never take: set aside with the reason, and an alert
    (on the ``alerts`` topic)."""
    row = session.get(OutboxMessage, message_id)
    if row is None or row.published_at is not None:
        return
    row.published_at = now
    row.failed_reason = reason
    alert = Alert(
        therapist_id=None,
        severity="error",
        code="event_unpublishable",
        outbox_id=message_id,
        message=f"an event for topic {row.topic} could not be published and was set aside: {reason}",
    )
    add_rows(session, [event_row(alerts, alert, now)])


def purge_published(session: Session, before: datetime) -> int:
    result = session.execute(delete(OutboxMessage).where(OutboxMessage.published_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def acquire_lease(session: Session, name: str, holder: str, now: datetime, duration: timedelta) -> bool:
    """Take or renew the lease ``name``; False while another holder's lease runs."""
    session.execute(insert_ignoring_conflicts(session, Lease).values(name=name))
    result = session.execute(
        update(Lease)
        .where(
            Lease.name == name,
            or_(Lease.holder.is_(None), Lease.holder == holder, Lease.expires_at < now),
        )
        .values(holder=holder, expires_at=now + duration)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def insert_ignoring_conflicts(session: Session, model: type[Any]) -> Insert:
    """INSERT … ON CONFLICT DO NOTHING, on PostgreSQL and SQLite alike."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    return sqlite.insert(model).on_conflict_do_nothing()


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(
        update(Lease).where(Lease.name == name, Lease.holder == holder).values(holder=None, expires_at=None)
    )
