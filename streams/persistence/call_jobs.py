"""Time-driven phone work in the database (CONTRACT §5.5): follow-ups of unanswered
emails, call reminders and the daily call list.

Each job claims its due rows with FOR UPDATE SKIP LOCKED and records what it did
in the same transaction as the events it publishes, so each due item is handled
once across all workers, also late after downtime."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from domain.batching import derived_key
from domain.calls import CallStatus
from domain.decisions import CONTACT_REQUEST
from domain.follow_up import (
    FollowUpCall,
    NoFollowUp,
    NoFollowUpReason,
    RequestInEmail,
    TherapistOnFile,
    decide_follow_up,
    without_call,
)
from domain.slots import Slot
from streams.messages.inbox import FollowUpEmail
from streams.messages.outputs import Alert, CallReason, DailyCallList, ListedCall, PhoneCallReminder
from streams.persistence.call_booking import CallPolicy, book_call, lock_bookings, search_slot
from streams.persistence.models import (
    Email,
    EmailStatus,
    JobRun,
    PhoneCall,
    PhoneCallBatch,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import Channels, add_rows, event_row, inbox_row, insert_ignoring_conflicts

log = logging.getLogger(__name__)

DAILY_CALL_LIST = "daily_call_list"


def next_follow_up(session: Session, policy: CallPolicy, channels: Channels, now: datetime) -> bool:
    """Handle the follow-up of one sent contact email that is due; False if none is."""
    email = session.scalars(
        select(Email)
        .where(
            Email.kind == CONTACT_REQUEST,
            Email.status == EmailStatus.SENT,
            Email.follow_up_done_at.is_(None),
            Email.sent_at <= now - policy.follow_up_after,
        )
        .order_by(Email.sent_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if email is None:
        return False
    email.follow_up_done_at = now
    entry = session.get(TherapistDirectoryEntry, email.therapist_id)
    calls = taken_over(session, email)
    decision = decide_follow_up(
        email.response_received,
        [
            RequestInEmail(
                b.placement_request_id, b.response_outcome, b.request_status, b.placement_request_id in calls
            )
            for b in email.batches
        ],
        None if entry is None else TherapistOnFile(entry.deleted, entry.contact_blocked, bool(entry.availability)),
    )
    if isinstance(decision, NoFollowUp):
        if decision.reason is NoFollowUpReason.ANSWERED:
            log.info("email %s was answered; no follow-up", email.id)
        elif decision.reason is NoFollowUpReason.NOTHING_OPEN:
            log.info("email %s: every request was answered, closed or taken over; no follow-up", email.id)
        return True
    batches = {b.placement_request_id: b for b in email.batches}
    still_open = [batches[request_id] for request_id in decision.placement_request_ids]
    if isinstance(decision, FollowUpCall):
        assert entry is not None  # a call is decided only for a therapist on file
        lock_bookings(session)
        found = search_slot(session, entry, policy, now)
        if isinstance(found, Slot):
            add_rows(
                session,
                [
                    book_call(
                        session,
                        therapist_id=email.therapist_id,
                        call_key=derived_key("follow_up_call", email.id),
                        requests=[(b.placement_request_id, b.patient_id) for b in still_open],
                        reason="follow_up",
                        at=found.start,
                        policy=policy,
                        channels=channels,
                        now=now,
                        email_id=email.id,
                    )
                ],
            )
            return True
        decision = without_call(decision, found.reason)
    if decision.no_call_slot is not None:
        alert = Alert(
            therapist_id=email.therapist_id,
            severity="warning",
            code="no_call_slot",
            email_id=email.id,
            message=f"no follow-up call could be booked for email {email.id}: "
            f"{decision.no_call_slot}; a follow-up email goes out instead (to a therapist who is "
            "not emailed, a call at a later batch run)",
        )
        add_rows(session, [event_row(channels.events, alert, now)])
    # No phone availability (or no free slot): a follow-up email, which the therapist
    # agent decides because it is subject to the weekly contact limit.
    follow_up = FollowUpEmail(email.therapist_id, email.id, email.sent_at, tuple(b.as_request() for b in still_open))
    add_rows(session, [inbox_row(channels, follow_up, now)])
    return True


def taken_over(session: Session, email: Email) -> set[int]:
    """The email's requests booked into a call since it was sent: it bounced and
    they went to the phone (streams.persistence.bounces), or staff booked one."""
    request_ids = [b.placement_request_id for b in email.batches]
    if not request_ids or email.sent_at is None:
        return set()
    in_calls = (
        select(PhoneCallBatch.placement_request_id)
        .join(PhoneCall)
        .where(
            PhoneCallBatch.placement_request_id.in_(request_ids),
            PhoneCall.therapist_id == email.therapist_id,
            PhoneCall.status != CallStatus.CANCELLED,
            PhoneCall.created_at >= email.sent_at,
        )
    )
    return set(session.scalars(in_calls))


def send_reminders(session: Session, policy: CallPolicy, channels: Channels, now: datetime, limit: int = 100) -> int:
    """``phone_call_reminder`` for every scheduled call whose reminder is due and
    not yet sent for its current time (late, after downtime, rather than never)."""
    due = session.scalars(
        select(PhoneCall)
        .where(
            PhoneCall.status == CallStatus.SCHEDULED,
            PhoneCall.scheduled_at <= now + policy.reminder_before,
            or_(PhoneCall.reminder_sent_for.is_(None), PhoneCall.reminder_sent_for != PhoneCall.scheduled_at),
        )
        .order_by(PhoneCall.scheduled_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    rows = []
    for call in due:
        call.reminder_sent_for = call.scheduled_at
        reminder = PhoneCallReminder(
            therapist_id=call.therapist_id,
            phone_call_id=call.id,
            scheduled_at=call.scheduled_at,
            late=now > call.scheduled_at - policy.reminder_before + timedelta(minutes=1),
        )
        rows.append(event_row(channels.events, reminder, now))
    add_rows(session, rows)
    return len(rows)


def daily_call_list(session: Session, policy: CallPolicy, channels: Channels, now: datetime) -> bool:
    """At the latest due run time not yet done: the calls of that local day, in order."""
    run_at = policy.daily_call_list.latest_at_or_before(now)
    # RETURNING says whether this worker inserted the run (rowcount is not reliable
    # for an ORM insert on every driver).
    claimed = session.execute(
        insert_ignoring_conflicts(session, JobRun)
        .values(name=DAILY_CALL_LIST, run_at=run_at, done_at=now)
        .returning(JobRun.name)
    ).first()
    if claimed is None:
        return False
    day = run_at.astimezone(policy.zone).date()
    start = datetime.combine(day, datetime.min.time(), policy.zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), policy.zone)
    calls = session.scalars(
        select(PhoneCall)
        .where(PhoneCall.status == CallStatus.SCHEDULED, PhoneCall.scheduled_at >= start, PhoneCall.scheduled_at < end)
        .order_by(PhoneCall.scheduled_at, PhoneCall.id)
    ).all()
    directory = {
        e.therapist_id: e
        for e in session.scalars(
            select(TherapistDirectoryEntry).where(
                TherapistDirectoryEntry.therapist_id.in_({c.therapist_id for c in calls})
            )
        )
    }
    listed = [
        ListedCall(
            phone_call_id=c.id,
            therapist_id=c.therapist_id,
            therapist_name=_name(directory.get(c.therapist_id)),
            phone=directory[c.therapist_id].phone if c.therapist_id in directory else None,
            scheduled_at=c.scheduled_at,
            duration_minutes=c.duration_minutes,
            reason=cast(CallReason, c.reason),
            attempt=c.attempt,
            placement_request_ids=[b.placement_request_id for b in c.batches],
        )
        for c in calls
    ]
    add_rows(session, [event_row(channels.events, DailyCallList(date=day, calls=listed), now)])
    return True


def _name(entry: TherapistDirectoryEntry | None) -> str | None:
    if entry is None:
        return None
    return " ".join(p for p in (entry.title, entry.first_name, entry.last_name) if p) or None
