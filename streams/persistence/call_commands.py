"""The call commands of ``communication-commands``: schedule, move, cancel a call,
and record its outcome."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import calls as rules
from domain.batching import derived_key
from domain.calls import CallStatus, Finish, Reschedule
from domain.slots import NoSlot, Slot
from streams.messages.commands import CallOutcome, CancelCall, ScheduleCall, UpdateCall
from streams.messages.outputs import (
    Alert,
    CallEnd,
    PhoneCallCompleted,
    PhoneCallRescheduled,
    PhoneCallUpdated,
    PlacementResponse,
    RequestOutcome,
)
from streams.persistence.call_booking import (
    CallPolicy,
    Row,
    book_call,
    cancel_call,
    entry_for_calls,
    lock_bookings,
    search_slot,
    slot_for,
)
from streams.persistence.models import (
    EmailBatch,
    PhoneCall,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import Channels, event_row
from streams.persistence.processed_commands import Command, Rejected

log = logging.getLogger(__name__)


def _call(session: Session, call_id: int) -> PhoneCall:
    call = session.get(PhoneCall, call_id, with_for_update=True)
    if call is None:
        raise Rejected(f"there is no phone call {call_id}")
    return call


def _schedulable(call: PhoneCall) -> None:
    refusal = rules.change_refusal(call.status)
    if refusal:
        raise Rejected(f"phone call {call.id}: {refusal}")


def schedule_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload_as(ScheduleCall)
    therapist_id = p.therapist_id
    entry = entry_for_calls(session, therapist_id)
    if not entry.availability:
        raise Rejected(
            f"therapist {therapist_id} has no phone availability, so no call can be booked with them "
            "(their follow-ups go by email)"
        )
    lock_bookings(session)
    at = slot_for(session, entry, policy, now, p.scheduled_at)
    request_ids = p.placement_request_ids
    patients = dict(
        session.execute(
            select(EmailBatch.placement_request_id, EmailBatch.patient_id).where(
                EmailBatch.placement_request_id.in_(request_ids)
            )
        ).all()
    )
    return [
        book_call(
            session,
            therapist_id=therapist_id,
            call_key=derived_key("manual_call", command.command_id),
            requests=[(r, patients.get(r)) for r in request_ids],
            reason="manual",
            at=at,
            policy=policy,
            channels=channels,
            now=now,
            notes=p.notes,
            causation=command.command_id,
        )
    ]


def update_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload_as(UpdateCall)
    call = _call(session, p.phone_call_id)
    _schedulable(call)
    events = []
    if p.scheduled_at is not None:
        entry = entry_for_calls(session, call.therapist_id)
        lock_bookings(session)
        at = slot_for(session, entry, policy, now, p.scheduled_at, exclude=call.id)
        events.append(_moved(call, at, channels, now, command.command_id))
    if p.notes is not None:
        call.notes = p.notes
        call.updated_at = now
        updated = PhoneCallUpdated(therapist_id=call.therapist_id, phone_call_id=call.id, notes=p.notes)
        events.append(event_row(channels.events, updated, now, causation_id=command.command_id))
    return events


def _moved(call: PhoneCall, at: datetime, channels: Channels, now: datetime, causation: str | None) -> Row:
    previous = call.scheduled_at
    call.scheduled_at = at
    call.reminder_sent_for = None  # the new time gets its own reminder
    call.updated_at = now
    moved = PhoneCallRescheduled(
        therapist_id=call.therapist_id,
        phone_call_id=call.id,
        scheduled_at=at,
        previous_scheduled_at=previous,
        attempt=call.attempt,
    )
    return event_row(channels.events, moved, now, causation_id=causation)


def cancel_phone_call(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload_as(CancelCall)
    call = _call(session, p.phone_call_id)
    _schedulable(call)
    return [cancel_call(call, p.reason or "cancelled", channels, now, command.command_id)]


def record_call_outcome(
    session: Session, command: Command, channels: Channels, now: datetime, policy: CallPolicy
) -> list[Row]:
    p = command.payload_as(CallOutcome)
    call = _call(session, p.phone_call_id)
    _schedulable(call)
    batches = {b.placement_request_id: b for b in call.batches}
    outcomes = p.outcomes
    missing = [o.placement_request_id for o in outcomes if o.placement_request_id not in batches]
    if missing:
        raise Rejected(
            f"phone call {call.id} is not about placement request(s) {', '.join(map(str, missing))} "
            f"(it is about: {', '.join(map(str, sorted(batches))) or 'none'})"
        )
    status = CallStatus(p.status)
    if status is not CallStatus.COMPLETED and outcomes:
        raise Rejected(f"outcomes per request belong to a completed call, not to one that was {status}")
    decision = rules.after_outcome(status, call.attempt, policy.max_attempts)
    causation = command.command_id
    if isinstance(decision, Reschedule):
        found = _next_attempt_slot(session, call, policy, now)
        if isinstance(found, Slot):
            call.attempt = decision.attempt
            call.outcome_notes = p.notes
            return [_moved(call, found.start, channels, now, causation)]
        decision = Finish(status, f"no slot to call again: {found.reason}")
    call.status = decision.status
    call.completed_at = now
    call.outcome_notes = p.notes
    call.updated_at = now
    events = []
    for outcome in outcomes:
        batch = batches[outcome.placement_request_id]
        batch.outcome = outcome.outcome
        batch.notes = outcome.notes
        batch.updated_at = now
    completed = PhoneCallCompleted(
        therapist_id=call.therapist_id,
        phone_call_id=call.id,
        status=cast(CallEnd, call.status.value),  # one of the outcomes: p.status
        outcomes=[
            RequestOutcome(placement_request_id=o.placement_request_id, outcome=o.outcome, notes=o.notes)
            for o in outcomes
        ],
    )
    events.append(event_row(channels.events, completed, now, causation_id=causation))
    for outcome in outcomes:
        batch = batches[outcome.placement_request_id]
        response = PlacementResponse(
            therapist_id=call.therapist_id,
            placement_request_id=batch.placement_request_id,
            patient_id=batch.patient_id,
            outcome=outcome.outcome,
            channel="phone",
            phone_call_id=call.id,
        )
        events.append(event_row(channels.events, response, now, causation_id=causation))
    if decision.alert:
        alert = Alert(
            therapist_id=call.therapist_id,
            severity="warning",
            code=f"call_{decision.status.value}",
            phone_call_id=call.id,
            message=f"phone call {call.id} with therapist {call.therapist_id}: {decision.alert}",
        )
        events.append(event_row(channels.events, alert, now, causation_id=causation))
    return events


def _next_attempt_slot(session: Session, call: PhoneCall, policy: CallPolicy, now: datetime) -> Slot | NoSlot:
    """The next free slot after the attempt that just failed (and after now)."""
    entry = session.get(TherapistDirectoryEntry, call.therapist_id)
    if entry is None or entry.deleted:
        return NoSlot("the therapist is not known here (or was deleted)")
    lock_bookings(session)
    after_attempt = call.scheduled_at + timedelta(minutes=call.duration_minutes)
    return search_slot(session, entry, policy, max(now, after_attempt), exclude=call.id)


CALL_HANDLERS = {
    "communication.schedule_phone_call": schedule_phone_call,
    "communication.update_phone_call": update_phone_call,
    "communication.cancel_phone_call": cancel_phone_call,
    "communication.record_call_outcome": record_call_outcome,
}
