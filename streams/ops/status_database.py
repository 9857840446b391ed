"""What ``commsvc status`` reads from the database: emails by status and the oldest
queued one, failures and alerts of the last 24 hours, the outbox backlog, and the
day's calls. Counts, ids and times only: no address, name or patient detail.

The queue depth and the outbox are measured as the metrics measure them
(``streams.persistence.backlog``). Failed attempts and alerts are read from the
outbox, where every one of them is written (published rows are kept for
``COMM_OUTBOX_RETENTION``); emails that failed for good from the emails themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from streams.persistence import backlog
from streams.persistence.models import OUTBOX, Email, EmailStatus, PhoneCall

ALERT = "communication.alert"
EMAIL_FAILED = "communication.email_failed"


@dataclass(frozen=True)
class OldestQueued:
    email_id: int
    kind: str
    queued_at: datetime
    next_attempt_at: datetime | None
    retry_count: int


@dataclass(frozen=True)
class OldestOutboxRow:
    id: int
    topic: str
    created_at: datetime


@dataclass(frozen=True)
class DatabaseStatus:
    emails: dict[str, int]
    oldest_queued: OldestQueued | None
    # How long the most overdue due email has waited (None: none is due).
    most_overdue: timedelta | None
    # Since when failures and alerts are counted (24 h, or the outbox retention if shorter).
    since: datetime
    failed_attempts: int
    failed_for_good: int
    alerts: dict[str, int]
    outbox_backlog: int
    outbox_oldest: OldestOutboxRow | None
    outbox_oldest_age: timedelta | None
    day: date
    calls_today: dict[str, int]


def day_bounds(now: datetime, zone: tzinfo) -> tuple[date, datetime, datetime]:
    """Today in ``zone``, and when it starts and ends, in UTC (DST days are 23 or 25 hours long)."""
    today = now.astimezone(zone).date()
    start = datetime.combine(today, time(0), zone).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), time(0), zone).astimezone(UTC)
    return today, start, end


def read(
    session: Session, now: datetime, *, zone: tzinfo, events_topic: str, window: timedelta, timeout: float
) -> DatabaseStatus:
    measured = backlog.measure(session, now)
    if session.get_bind().dialect.name == "postgresql":
        # After measure's own (shorter) limit: a database in trouble must not hold the command.
        session.execute(text(f"SET LOCAL statement_timeout = {int(timeout * 1000)}"))
    counts = {status.value: 0 for status in EmailStatus}
    for status, count in session.execute(select(Email.status, func.count()).group_by(Email.status)):
        counts[EmailStatus(status).value] = int(count)
    queued_at = func.coalesce(Email.queued_at, Email.created_at)
    oldest = session.execute(
        select(Email.id, Email.kind, queued_at, Email.next_attempt_at, Email.retry_count)
        .where(Email.status == EmailStatus.QUEUED)
        .order_by(queued_at, Email.id)
        .limit(1)
    ).first()
    since = now - window
    failed_for_good = session.scalar(
        select(func.count()).where(Email.status == EmailStatus.FAILED, Email.updated_at >= since)
    )
    attempts, alerts = _failures_and_alerts(session, events_topic, since)
    outbox_oldest = session.execute(
        select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.created_at)
        .where(OUTBOX.c.published_at.is_(None))
        .order_by(OUTBOX.c.id)
        .limit(1)
    ).first()
    today, start, end = day_bounds(now, zone)
    calls = {
        str(status): int(count)
        for status, count in session.execute(
            select(PhoneCall.status, func.count())
            .where(PhoneCall.scheduled_at >= start, PhoneCall.scheduled_at < end)
            .group_by(PhoneCall.status)
        )
    }
    return DatabaseStatus(
        emails=counts,
        oldest_queued=None if oldest is None else OldestQueued(*oldest),
        most_overdue=measured.oldest_due,
        since=since,
        failed_attempts=attempts,
        failed_for_good=int(failed_for_good or 0),
        alerts=alerts,
        outbox_backlog=measured.unpublished,
        outbox_oldest=None if outbox_oldest is None else OldestOutboxRow(*outbox_oldest),
        outbox_oldest_age=measured.oldest_unpublished,
        day=today,
        calls_today=dict(sorted(calls.items())),
    )


def _failures_and_alerts(session: Session, events_topic: str, since: datetime) -> tuple[int, dict[str, int]]:
    """Failed attempts (``email_failed``) and alerts by code, written to the outbox since ``since``."""
    rows = session.scalars(
        select(OUTBOX.c.value).where(
            OUTBOX.c.topic == events_topic,
            OUTBOX.c.created_at >= since,
            or_(*(OUTBOX.c.value.contains(kind, autoescape=True) for kind in (ALERT, EMAIL_FAILED))),
        )
    )
    attempts, alerts = 0, dict[str, int]()
    for value in rows:
        try:
            document = json.loads(value)
        except json.JSONDecodeError:
            continue
        kind = document.get("event_type") if isinstance(document, dict) else None
        if kind == EMAIL_FAILED:
            attempts += 1
        elif kind == ALERT:
            code = str((document.get("payload") or {}).get("code") or "unknown")
            alerts[code] = alerts.get(code, 0) + 1
    return attempts, dict(sorted(alerts.items()))
