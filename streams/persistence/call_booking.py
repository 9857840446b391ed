"""Booking phone calls (CONTRACT §5.4): the next free slot inside the therapist's
hours, never two calls at once with a therapist, within the staff capacity.

Bookings take one lock (on PostgreSQL an advisory transaction lock; SQLite has a
single writer anyway), so two workers never give away the same slot or exceed the
staff capacity."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from domain.availability import Availability
from domain.calls import CallStatus
from domain.schedule import Schedule
from domain.slots import BookedCalls, NoSlot, Slot, find_slot
from streams.messages.inbox import CallNotBooked
from streams.messages.outputs import Alert, CallReason, PhoneCallCancelled, PhoneCallScheduled
from streams.messages.send_commands import BookCall
from streams.persistence.models import (
    PhoneCall,
    PhoneCallBatch,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import Channels, add_rows, event_row, inbox_row
from streams.persistence.processed_commands import Rejected

log = logging.getLogger(__name__)

_BOOKING_LOCK = 7_215_004_312

Row = dict[str, Any]  # an outbox row


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


def cancel_call(call: PhoneCall, reason: str, channels: Channels, now: datetime, causation: str | None = None) -> Row:
    call.status = CallStatus.CANCELLED
    call.cancel_reason = reason
    call.updated_at = now
    cancelled = PhoneCallCancelled(therapist_id=call.therapist_id, phone_call_id=call.id, reason=reason)
    return event_row(channels.events, cancelled, now, causation_id=causation)


def zone_of(entry: TherapistDirectoryEntry, policy: CallPolicy) -> tzinfo:
    try:
        return ZoneInfo(entry.timezone) if entry.timezone else policy.zone
    except (ZoneInfoNotFoundError, ValueError):
        return policy.zone


def lock_bookings(session: Session) -> None:
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


def search_slot(
    session: Session,
    entry: TherapistDirectoryEntry,
    policy: CallPolicy,
    now: datetime,
    *,
    at: datetime | None = None,
    exclude: int | None = None,
) -> Slot | NoSlot:
    """The next free slot (``at`` None) or whether ``at`` itself is free."""
    # Stored as it was validated at ingest (``as_mapping``): not checked again here.
    availability = Availability.from_mapping(entry.availability or {})
    start = at or now
    notice = timedelta(0) if at is not None else policy.min_notice
    horizon = timedelta(0) if at is not None else policy.horizon
    until = start + notice + horizon + timedelta(days=2)
    booked = _booked(session, entry.therapist_id, now, until, exclude)
    staff = _booked(session, None, now, until, exclude) if policy.capacity is not None else BookedCalls.of(())
    return find_slot(
        availability,
        zone_of(entry, policy),
        start,
        booked=booked,
        slot=policy.slot,
        min_notice=notice,
        horizon=horizon,
        staff_calls=staff,
        capacity=policy.capacity,
    )


def entry_for_calls(session: Session, therapist_id: int) -> TherapistDirectoryEntry:
    entry = session.get(TherapistDirectoryEntry, therapist_id)
    if entry is None:
        raise Rejected(f"therapist {therapist_id} is not known here yet")
    if entry.deleted:
        raise Rejected(f"therapist {therapist_id} was deleted: no further contact")
    if entry.contact_blocked:
        raise Rejected(f"therapist {therapist_id} is blocked for contact (contact_blocked)")
    return entry


def slot_for(
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
        found = search_slot(session, entry, policy, now, at=at, exclude=exclude)
        if isinstance(found, NoSlot) or found.start != at:
            local = at.astimezone(zone_of(entry, policy)).strftime("%a %d.%m.%Y %H:%M")
            raise Rejected(
                f"{local} (therapist's time) cannot be booked: it must start on the "
                f"{round(policy.slot / timedelta(minutes=1))}-minute grid inside the therapist's phone "
                "availability and not overlap another call with them (or exceed the staff capacity)"
            )
        return at
    found = search_slot(session, entry, policy, now, exclude=exclude)
    if isinstance(found, NoSlot):
        raise Rejected(found.reason)
    return found.start


def book_call(
    session: Session,
    *,
    therapist_id: int,
    call_key: str,
    requests: Sequence[tuple[int, int | None]],
    reason: CallReason,
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
    scheduled = PhoneCallScheduled(
        therapist_id=therapist_id,
        phone_call_id=call.id,
        scheduled_at=at,
        duration_minutes=call.duration_minutes,
        placement_request_ids=[r for r, _ in requests],
        reason=reason,
    )
    return event_row(channels.events, scheduled, now, causation_id=causation)


def book_instead_of_email(
    session: Session, call: BookCall, policy: CallPolicy, channels: Channels, now: datetime
) -> None:
    """The therapist's address is suppressed: a call about the waiting requests at the
    next free slot (the same search and capacity rules as a follow-up call). Booked
    once per decision (``call_key``); without a free slot, an alert, and the requests
    wait for the next batch run."""
    therapist_id = call.therapist_id
    if session.scalars(select(PhoneCall.id).where(PhoneCall.call_key == call.call_key)).first() is not None:
        return  # a replayed decision
    entry = session.get(TherapistDirectoryEntry, therapist_id)
    if entry is None or entry.deleted or entry.contact_blocked or not entry.availability:
        log.warning("therapist %s cannot be called now; the call for their requests is not booked", therapist_id)
        return
    lock_bookings(session)
    found = search_slot(session, entry, policy, now)
    if isinstance(found, Slot):
        row = book_call(
            session,
            therapist_id=therapist_id,
            call_key=call.call_key,
            requests=[(r.placement_request_id, r.patient_id) for r in call.requests],
            reason=cast(CallReason, call.reason),  # the therapist agent's: undeliverable
            at=found.start,
            policy=policy,
            channels=channels,
            now=now,
        )
        add_rows(session, [row])
        return
    alert = Alert(
        therapist_id=therapist_id,
        severity="warning",
        code="no_call_slot",
        message=f"therapist {therapist_id}'s address cannot be reached and no call could be booked: "
        f"{found.reason}; the requests wait for the next batch run",
    )
    add_rows(
        session,
        [
            event_row(channels.events, alert, now),
            inbox_row(channels, CallNotBooked(therapist_id, call.requests), now),
        ],
    )
