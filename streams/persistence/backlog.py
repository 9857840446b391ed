"""What is waiting in the database, for the metrics: emails not yet sent, by status,
how late the most overdue one is, and the outbox not yet published.

Four small statements, each answered from an index (``ix_emails_due``,
``ix_outbox_unpublished``), so a scrape costs the same however many emails were
ever sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from streams.persistence.models import OUTBOX, Email, EmailStatus

# The statuses of an email on its way out (sent and failed ones are done).
WAITING = (EmailStatus.DRAFT, EmailStatus.QUEUED, EmailStatus.SENDING)


@dataclass(frozen=True)
class Backlog:
    emails: dict[EmailStatus, int]
    # How long the most overdue queued email has been due (None: none is due).
    # Emails held back by the weekly rule or waiting for a retry are not due yet.
    oldest_due: timedelta | None
    unpublished: int
    # How long the oldest unpublished outbox message has waited (None: none waits).
    oldest_unpublished: timedelta | None


def measure(session: Session, now: datetime) -> Backlog:
    if session.get_bind().dialect.name == "postgresql":
        # A scrape must not wait long on a database in trouble (the gauges are then left out).
        session.execute(text("SET LOCAL statement_timeout = 2000"))
    counts: dict[EmailStatus, int] = {
        status: count
        for status, count in session.execute(
            select(Email.status, func.count()).where(Email.status.in_(WAITING)).group_by(Email.status)
        )
    }
    first_due = session.scalar(
        select(func.min(Email.next_attempt_at)).where(Email.status == EmailStatus.QUEUED, Email.next_attempt_at <= now)
    )
    unpublished = session.scalar(select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None)))
    first_unpublished = session.scalar(
        select(OUTBOX.c.created_at).where(OUTBOX.c.published_at.is_(None)).order_by(OUTBOX.c.id).limit(1)
    )
    return Backlog(
        emails={status: int(counts.get(status, 0)) for status in WAITING},
        oldest_due=_since(first_due, now),
        unpublished=int(unpublished or 0),
        oldest_unpublished=_since(first_unpublished, now),
    )


def _since(then: datetime | None, now: datetime) -> timedelta | None:
    return None if then is None else max(now - then, timedelta(0))
