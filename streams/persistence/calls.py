"""Phone follow-up on the database side (CONTRACT §5.4, §5.5): booking calls,
follow-ups of unanswered emails, reminders, the daily call list, call commands.

Bookings take one lock (on PostgreSQL an advisory transaction lock; SQLite has a
single writer anyway), so two workers never give away the same slot or exceed the
staff capacity. Time-driven work claims its due rows with FOR UPDATE SKIP LOCKED
and records what it did in the same transaction as the events it publishes, so
each due item is handled once across all workers, also late after downtime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from domain import calls as rules
from domain.availability import parse_availability
from domain.batching import derived_key
from domain.calls import CallStatus, Finish, Reschedule
from domain.decisions import CONTACT_REQUEST
from domain.follow_up import RequestInEmail, open_requests
from domain.schedule import Schedule
from domain.slots import BookedCalls, NoSlot, Slot, find_slot
from streams.codec import dumps
from streams.persistence.commands import Command, Rejected
from streams.persistence.emails import Channels, fail_unsent
from streams.persistence.models import (
    Email,
    EmailBatch,
    EmailStatus,
    JobRun,
    PhoneCall,
    PhoneCallBatch,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import add_rows, event_row, insert_ignoring_conflicts, message_row

log = logging.getLogger(__name__)

_BOOKING_LOCK = 7_215_004_312
Row = dict[str, Any]  # an outbox row
DAILY_CALL_LIST = "daily_call_list"


@dataclass(frozen=True)
class CallPolicy:
    slot: timedelta
    min_notice: timedelta
    horizon: timedelta
    capacity: int | None
    reminder_before: timedelta
    max_attempts: int
    follow_up_after: timedelta
    zone: tzinfo  # COMM_TIMEZONE: therapists without a zone of their own, the call list
    daily_call_list: Schedule

    @property
    def duration_minutes(self) -> int:
        return max(1, round(self.slot / timedelta(minutes=1)))


# -- the directory mirror ---------------------------------------------------------------


def update_directory(session: Session, command: Mapping[str, Any], channels: Channels, now: datetime) -> None:
    """Keep the therapist's directory entry; a deleted therapist's calls are cancelled."""
    therapist_id = int(command["therapist_id"])
    entry = session.get(TherapistDirectoryEntry, therapist_id, with_for_update=True)
    if entry is None:
        entry = TherapistDirectoryEntry(
            therapist_id=therapist_id, availability={}, contact_blocked=False, deleted=False
        )
        session.add(entry)
    if command.get("deleted"):
        entry.deleted = True
        entry.updated_at = now
        _cancel_all(session, therapist_id, "therapist_deleted", channels, now)
        fail_unsent(session, therapist_id, "therapist deleted: no further contact", channels, now)
        return
    profile = command["profile"]
    for name in ("email", "first_name", "last_name", "title", "salutation", "phone", "timezone"):
        setattr(entry, name, profile.get(name))
    if "availability" in profile:  # absent: a refused update kept the previous one
        entry.availability = profile.get("availability") or {}
    entry.contact_blocked = bool(profile.get("contact_blocked"))
    if entry.contact_blocked:
        _cancel_all(session, therapist_id, "contact_blocked", channels, now)
        fail_unsent(session, therapist_id, "therapist blocked for contact", channels, now)
    entry.deleted = False
    entry.updated_at = now


def _cancel_all(session: Session, therapist_id: int, reason: str, channels: Channels, now: datetime) -> None:
    scheduled = session.scalars(
        select(PhoneCall)
        .where(PhoneCall.therapist_id == therapist_id, PhoneCall.status == CallStatus.SCHEDULED)
        .with_for_update()
    )
    add_rows(session, [_cancel(call, reason, channels, now) for call in scheduled])


def _cancel(call: PhoneCall, reason: str, channels: Channels, now: datetime, causation: str | None = None) -> Row:
    call.status = CallStatus.CANCELLED
    call.cancel_reason = reason
    call.updated_at = now
    return event_row(
        channels.events,
        "communication.phone_call_cancelled",
        call.therapist_id,
        {"phone_call_id": call.id, "reason": reason},
        now,
        causation_id=causation,
    )


# -- finding and booking slots ------------------------------------------------------------


def _zone(entry: TherapistDirectoryEntry, policy: CallPolicy) -> tzinfo:
    try:
        return ZoneInfo(entry.timezone) if entry.timezone else policy.zone
    except (ZoneInfoNotFoundError, ValueError):
        return policy.zone


def _lock_bookings(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BOOKING_LOCK})


def _booked(
    session: Session, therapist_id: int | None, since: datetime, until: datetime, exclude: int | None
) -> BookedCalls:
    query = select(PhoneCall.scheduled_at, PhoneCall.duration_minutes, PhoneCall.id).where(
        PhoneCall.status == CallStatus.SCHEDULED,
        PhoneCall.scheduled_at < until,
        PhoneCall.scheduled_at >= since - timedelta(days=1),
    )
    if therapist_id is not None:
        query = query.where(PhoneCall.therapist_id == therapist_id)
    return BookedCalls.of(
        (start, start + timedelta(minutes=minutes))
        for start, minutes, call_id in session.execute(query)
        if call_id != exclude
    )


def _search(
    session: Session,
    entry: TherapistDirectoryEntry,
    policy: CallPolicy,
    now: datetime,
    *,
    at: datetime | None = None,
    exclude: int | None = None,
) -> Slot | NoSlot:
    """The next free slot (``at`` None) or whether ``at`` itself is free."""
    availability = parse_availability(entry.availability or {})
    start = at or now
    notice = timedelta(0) if at is not None else policy.min_notice
    horizon = timedelta(0) if at is not None else policy.horizon
    until = start + notice + horizon + timedelta(days=2)
    booked = _booked(session, entry.therapist_id, now, until, exclude)
    staff = _booked(session, None, now, until, exclude) if policy.capacity is not None else BookedCalls.of(())
    return find_slot(
        availability,
        _zone(entry, policy),
        start,
        booked=booked,
        slot=policy.slot,
        min_notice=notice,
        horizon=horizon,
        staff_calls=staff,
        capacity=policy.capacity,
    )


def _entry_for_calls(session: Session, therapist_id: int) -> TherapistDirectoryEntry:
    entry = session.get(TherapistDirectoryEntry, therapist_id)
    if entry is None:
        raise Rejected(f"therapist {therapist_id} is not known here yet")
    if entry.deleted:
        raise Rejected(f"therapist {therapist_id} was deleted: no further contact")
    if entry.contact_blocked:
        raise Rejected(f"therapist {therapist_id} is blocked for contact (contact_blocked)")
    return entry


def _slot_for(
    session: Session,
    entry: TherapistDirectoryEntry,
    policy: CallPolicy,
    now: datetime,
    at: datetime | None,
    exclude: int | None = None,
) -> datetime:
    """The start of the call: ``at`` if it is free, else the next free slot; or Rejected."""
    if at is not None:
        if at < now:
            raise Rejected(f"{at.isoformat()} is in the past")
        found = _search(session, entry, policy, now, at=at, exclude=exclude)
        if isinstance(found, NoSlot) or found.start != at:
            local = at.astimezone(_zone(entry, policy)).strftime("%a %d.%m.%Y %H:%M")
            raise Rejected(
                f"{local} (therapist's time) cannot be booked: it must start on the "
                f"{round(policy.slot / timedelta(minutes=1))}-minute grid inside the therapist's phone "
                "availability and not overlap another call with them (or exceed the staff capacity)"
            )
        return at
    found = _search(session, entry, policy, now, exclude=exclude)
    if isinstance(found, NoSlot):
        raise Rejected(found.reason)
    return found.start


def _book(
    session: Session,
    *,
    therapist_id: int,
    call_key: str,
    requests: Sequence[tuple[int, int | None]],
    reason: str,
    at: datetime,
    policy: CallPolicy,
    channels: Channels,
    now: datetime,
    email_id: int | None = None,
    notes: str | None = None,
    causation: str | None = None,
) -> Row:
    call = PhoneCall(
        call_key=call_key,
        therapist_id=therapist_id,
        email_id=email_id,
        scheduled_at=at,
        duration_minutes=policy.duration_minutes,
        reason=reason,
        status=CallStatus.SCHEDULED,
        attempt=1,
        notes=notes,
        created_at=now,
        updated_at=now,
        batches=[
            PhoneCallBatch(placement_request_id=r, patient_id=p, created_at=now, updated_at=now) for r, p in requests
        ],
    )
    session.add(call)
    session.flush()
    return event_row(
        channels.events,
        "communication.phone_call_scheduled",
        therapist_id,
        {
            "phone_call_id": call.id,
            "scheduled_at": at.isoformat(),
            "duration_minutes": call.duration_minutes,
            "placement_request_ids": [r for r, _ in requests],
            "reason": reason,
        },
        now,
        causation_id=causation,
    )


# -- follow-ups ----------------------------------------------------------------------------


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
    if email.response_received and not any(b.response_outcome for b in email.batches):
        log.info("email %s was answered; no follow-up", email.id)
        return True
    batches = {b.placement_request_id: b for b in email.batches}
    still_open = [
        batches[r.placement_request_id]
        for r in open_requests(
            RequestInEmail(b.placement_request_id, b.response_outcome, b.request_status) for b in email.batches
        )
    ]
    if not still_open:
        log.info("email %s: every request was answered or closed; no follow-up", email.id)
        return True
    entry = session.get(TherapistDirectoryEntry, email.therapist_id)
    if entry is not None and (entry.deleted or entry.contact_blocked):
        return True
    if entry is not None and entry.availability:
        _lock_bookings(session)
        found = _search(session, entry, policy, now)
        if isinstance(found, Slot):
            add_rows(
                session,
                [
                    _book(
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
        add_rows(
            session,
            [
                event_row(
                    channels.events,
                    "communication.alert",
                    email.therapist_id,
                    {
                        "severity": "warning",
                        "code": "no_call_slot",
                        "email_id": email.id,
                        "message": f"no follow-up call could be booked for email {email.id}: {found.reason}; "
                        "a follow-up email goes out instead",
                    },
                    now,
                )
            ],
        )
    # No phone availability (or no free slot): a follow-up email, which the therapist
    # agent decides because it is subject to the weekly contact limit.
    requests = [
        {
            "placement_request_id": b.placement_request_id,
            "patient_id": b.patient_id,
            "registered_at": b.registered_at.isoformat() if b.registered_at else None,
            "patient": dict(b.patient),
        }
        for b in still_open
    ]
    feedback = {
        "kind": "follow_up_email",
        "therapist_id": email.therapist_id,
        "email_id": email.id,
        "original_sent_at": email.sent_at.isoformat() if email.sent_at else None,
        "requests": requests,
    }
    add_rows(session, [message_row(channels.inbox, str(email.therapist_id), dumps(feedback), now)])
    return True


def book_instead_of_email(
    session: Session, command: Mapping[str, Any], policy: CallPolicy, channels: Channels, now: datetime
) -> None:
    """The therapist's address is suppressed: a call about the waiting requests at the
    next free slot (the same search and capacity rules as a follow-up call). Booked
    once per decision (``call_key``); without a free slot, an alert, and the requests
    wait for the next batch run."""
    therapist_id = int(command["therapist_id"])
    call_key = command["call_key"]
    if session.scalars(select(PhoneCall.id).where(PhoneCall.call_key == call_key)).first() is not None:
        return  # a replayed decision
    requests = [(int(r[0]), int(r[1])) for r in command["requests"]]
    entry = session.get(TherapistDirectoryEntry, therapist_id)
    if entry is None or entry.deleted or entry.contact_blocked or not entry.availability:
        log.warning("therapist %s cannot be called now; the call for their requests is not booked", therapist_id)
        return
    _lock_bookings(session)
    found = _search(session, entry, policy, now)
    if isinstance(found, Slot):
        row = _book(
            session,
            therapist_id=therapist_id,
            call_key=call_key,
            requests=requests,
            reason=command.get("reason", "undeliverable"),
            at=found.start,
            policy=policy,
            channels=channels,
            now=now,
        )
        add_rows(session, [row])
        return
    alert = {
        "severity": "warning",
        "code": "no_call_slot",
        "message": f"therapist {therapist_id}'s address cannot be reached and no call could be booked: "
        f"{found.reason}; the requests wait for the next batch run",
    }
    returned = [{"placement_request_id": r[0], "patient_id": r[1], "registered_at": r[2]} for r in command["requests"]]
    feedback = {"kind": "call_not_booked", "therapist_id": therapist_id, "requests": returned}
    add_rows(
        session,
        [
            event_row(channels.events, "communication.alert", therapist_id, alert, now),
            message_row(channels.inbox, str(therapist_id), dumps(feedback), now),
        ],
    )


# -- reminders and the daily call list ------------------------------------------------------


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
        rows.append(
            event_row(
                channels.events,
                "communication.phone_call_reminder",
                call.therapist_id,
                {
                    "phone_call_id": call.id,
                    "scheduled_at": call.scheduled_at.isoformat(),
                    "late": now > call.scheduled_at - policy.reminder_before + timedelta(minutes=1),
                },
                now,
            )
        )
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
        {
            "phone_call_id": c.id,
            "therapist_id": c.therapist_id,
            "therapist_name": _name(directory.get(c.therapist_id)),
            "phone": directory[c.therapist_id].phone if c.therapist_id in directory else None,
            "scheduled_at": c.scheduled_at.isoformat(),
            "duration_minutes": c.duration_minutes,
            "reason": c.reason,
            "attempt": c.attempt,
            "placement_request_ids": [b.placement_request_id for b in c.batches],
        }
        for c in calls
    ]
    add_rows(
        session,
        [
            event_row(
                channels.events, "communication.daily_call_list", None, {"date": day.isoformat(), "calls": listed}, now
            )
        ],
    )
    return True


def _name(entry: TherapistDirectoryEntry | None) -> str | None:
    if entry is None:
        return None
    return " ".join(p for p in (entry.title, entry.first_name, entry.last_name) if p) or None


# -- call commands ----------------------------------------------------------------------------


def _call(session: Session, call_id: int) -> PhoneCall:
    call = session.get(PhoneCall, call_id, with_for_update=True)
    if call is None:
        raise Rejected(f"there is no phone call {call_id}")
    return call


def _schedulable(call: PhoneCall) -> None:
    refusal = rules.change_refusal(call.status)
    if refusal:
        raise Rejected(f"phone call {call.id}: {refusal}")


def _at(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def schedule_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload
    therapist_id = int(p["therapist_id"])
    entry = _entry_for_calls(session, therapist_id)
    if not entry.availability:
        raise Rejected(
            f"therapist {therapist_id} has no phone availability, so no call can be booked with them "
            "(their follow-ups go by email)"
        )
    _lock_bookings(session)
    at = _slot_for(session, entry, policy, now, _at(p.get("scheduled_at")))
    request_ids = [int(r) for r in p["placement_request_ids"]]
    patients = dict(
        session.execute(
            select(EmailBatch.placement_request_id, EmailBatch.patient_id).where(
                EmailBatch.placement_request_id.in_(request_ids)
            )
        ).all()
    )
    return [
        _book(
            session,
            therapist_id=therapist_id,
            call_key=derived_key("manual_call", command.command_id),
            requests=[(r, patients.get(r)) for r in request_ids],
            reason="manual",
            at=at,
            policy=policy,
            channels=channels,
            now=now,
            notes=p.get("notes"),
            causation=command.command_id,
        )
    ]


def update_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload
    call = _call(session, int(p["phone_call_id"]))
    _schedulable(call)
    events = []
    if p.get("scheduled_at") is not None:
        entry = _entry_for_calls(session, call.therapist_id)
        _lock_bookings(session)
        at = _slot_for(session, entry, policy, now, _at(p["scheduled_at"]), exclude=call.id)
        events.append(_moved(call, at, channels, now, command.command_id))
    if p.get("notes") is not None:
        call.notes = p["notes"]
        call.updated_at = now
        events.append(
            event_row(
                channels.events,
                "communication.phone_call_updated",
                call.therapist_id,
                {"phone_call_id": call.id, "notes": call.notes},
                now,
                causation_id=command.command_id,
            )
        )
    return events


def _moved(call: PhoneCall, at: datetime, channels: Channels, now: datetime, causation: str | None) -> Row:
    previous = call.scheduled_at
    call.scheduled_at = at
    call.reminder_sent_for = None  # the new time gets its own reminder
    call.updated_at = now
    return event_row(
        channels.events,
        "communication.phone_call_rescheduled",
        call.therapist_id,
        {
            "phone_call_id": call.id,
            "scheduled_at": at.isoformat(),
            "previous_scheduled_at": previous.isoformat(),
            "attempt": call.attempt,
        },
        now,
        causation_id=causation,
    )


def cancel_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    call = _call(session, int(command.payload["phone_call_id"]))
    _schedulable(call)
    return [_cancel(call, command.payload.get("reason") or "cancelled", channels, now, command.command_id)]


def record_call_outcome(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload
    call = _call(session, int(p["phone_call_id"]))
    _schedulable(call)
    batches = {b.placement_request_id: b for b in call.batches}
    outcomes = list(p.get("outcomes") or [])
    missing = [o["placement_request_id"] for o in outcomes if int(o["placement_request_id"]) not in batches]
    if missing:
        raise Rejected(
            f"phone call {call.id} is not about placement request(s) {', '.join(map(str, missing))} "
            f"(it is about: {', '.join(map(str, sorted(batches))) or 'none'})"
        )
    status = CallStatus(p["status"])
    if status is not CallStatus.COMPLETED and outcomes:
        raise Rejected(f"outcomes per request belong to a completed call, not to one that was {status}")
    decision = rules.after_outcome(status, call.attempt, policy.max_attempts)
    causation = command.command_id
    if isinstance(decision, Reschedule):
        found = _next_attempt_slot(session, call, policy, now)
        if isinstance(found, Slot):
            call.attempt = decision.attempt
            call.outcome_notes = p.get("notes")
            return [_moved(call, found.start, channels, now, causation)]
        decision = Finish(status, f"no slot to call again: {found.reason}")
    call.status = decision.status
    call.completed_at = now
    call.outcome_notes = p.get("notes")
    call.updated_at = now
    events = []
    for outcome in outcomes:
        batch = batches[int(outcome["placement_request_id"])]
        batch.outcome = outcome["outcome"]
        batch.notes = outcome.get("notes")
        batch.updated_at = now
    events.append(
        event_row(
            channels.events,
            "communication.phone_call_completed",
            call.therapist_id,
            {
                "phone_call_id": call.id,
                "status": call.status.value,
                "outcomes": [
                    {
                        "placement_request_id": o["placement_request_id"],
                        "outcome": o["outcome"],
                        "notes": o.get("notes"),
                    }
                    for o in outcomes
                ],
            },
            now,
            causation_id=causation,
        )
    )
    for outcome in outcomes:
        batch = batches[int(outcome["placement_request_id"])]
        events.append(
            event_row(
                channels.events,
                "communication.placement_response",
                call.therapist_id,
                {
                    "placement_request_id": batch.placement_request_id,
                    "patient_id": batch.patient_id,
                    "outcome": outcome["outcome"],
                    "channel": "phone",
                    "phone_call_id": call.id,
                },
                now,
                causation_id=causation,
            )
        )
    if decision.alert:
        events.append(
            event_row(
                channels.events,
                "communication.alert",
                call.therapist_id,
                {
                    "severity": "warning",
                    "code": f"call_{decision.status.value}",
                    "phone_call_id": call.id,
                    "message": f"phone call {call.id} with therapist {call.therapist_id}: {decision.alert}",
                },
                now,
                causation_id=causation,
            )
        )
    return events


def _next_attempt_slot(session: Session, call: PhoneCall, policy: CallPolicy, now: datetime) -> Slot | NoSlot:
    """The next free slot after the attempt that just failed (and after now)."""
    entry = session.get(TherapistDirectoryEntry, call.therapist_id)
    if entry is None or entry.deleted:
        return NoSlot("the therapist is not known here (or was deleted)")
    _lock_bookings(session)
    after_attempt = call.scheduled_at + timedelta(minutes=call.duration_minutes)
    return _search(session, entry, policy, max(now, after_attempt), exclude=call.id)


CALL_HANDLERS = {
    "communication.schedule_phone_call": schedule_phone_call,
    "communication.update_phone_call": update_phone_call,
    "communication.cancel_phone_call": cancel_phone_call,
    "communication.record_call_outcome": record_call_outcome,
}
