"""When stored content is forgotten (COMM_CONTENT_RETENTION): the rule, not the
database work (that is streams/persistence/retention.py).

Content is what a person wrote or the templates rendered about patients: email
bodies, the details in batch entries, answers and call notes. It is kept as long
as it can still change or be needed for the email's own life, and forgotten once
it is final and older than the retention: an email that was sent (counted from
its send time) or failed for good (from its last change), a call that is no
longer scheduled (from its last change). Ids, times, statuses and outcomes stay,
so the history of who was contacted when, and with what result, is kept.

The job runs daily at 03:00 in COMM_TIMEZONE (a quiet hour), once across all
workers; a retention shorter than a day (tests, demos) runs as often as the
retention itself, so that nothing is kept more than about twice the retention.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from domain.calls import CallStatus
from domain.email_status import EmailStatus
from domain.schedule import IntervalSchedule, Schedule, parse_cron

DAILY_AT = "0 3 * * *"
DAY = timedelta(days=1)

# Emails whose content can no longer change by itself: sent, or failed for good
# (a failed email is re-queued only by staff, who then give it new content).
FINAL_EMAIL_STATUSES = frozenset({EmailStatus.SENT, EmailStatus.FAILED})
# Calls that will not be made again: anything but scheduled.
OPEN_CALL_STATUSES = frozenset({CallStatus.SCHEDULED})


def retention_schedule(retention: timedelta, zone: tzinfo) -> Schedule:
    """Daily at 03:00 local time; as often as ``retention`` when that is shorter."""
    if retention >= DAY:
        return parse_cron(DAILY_AT, zone)
    return IntervalSchedule(retention)


def cutoff(now: datetime, retention: timedelta) -> datetime:
    """Content whose age is counted from before this moment is due."""
    if retention <= timedelta(0):
        raise ValueError("a retention must be longer than zero")
    return now - retention
