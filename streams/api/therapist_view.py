"""One therapist's communication as it stands: the therapist table's entry (what
waits, what is in flight, the weekly rule's send history, a suppression) joined
with what the database holds (the emails' ids and statuses, the last contact email,
the calls still to be made).

The table is the truth for what has been decided: a request leaves ``pending`` the
moment a batch run puts it in an email, before the email is stored. Only the worker
that owns the therapist's partition holds that entry live (streams/api/routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from domain import contact_limit
from domain.placement import registration_order
from domain.schedule import Schedule
from domain.therapist_state import PHONE_ONLY, TherapistState, same_address
from streams.persistence.call_reads import CallSummary, StoredEmail, TherapistRecords

# An email the therapist agent decided whose row the sender agent has not stored yet.
DECIDED = "decided"


@dataclass(frozen=True)
class WaitingRequest:
    placement_request_id: int
    patient_id: int
    registered_at: datetime
    status: str | None  # the matching service's latest status, if it sent one


@dataclass(frozen=True)
class EmailInFlight:
    """An email on its way: decided and not yet confirmed sent (``email_key`` set),
    or stored and queued or being sent (confirmations and manual emails that do
    not count toward the weekly rule are not tracked by the table)."""

    email_id: int | None  # None: decided, not stored yet
    email_key: str
    kind: str
    status: str  # an email status, or "decided"
    counts_toward_limit: bool
    placement_request_ids: tuple[int, ...]
    decided_at: datetime | None
    queued_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class ContactEmail:
    email_id: int
    kind: str
    subject: str
    sent_at: datetime | None


@dataclass(frozen=True)
class WeeklyRule:
    """CONTRACT §5.1 for this therapist, from the send times the table counts."""

    interval_seconds: int
    # Sends that count toward the rule, inside the window (oldest first).
    contact_sent_at: tuple[datetime, ...]
    # When the rule next allows a contact email (None: it allows one now).
    next_contact_at: datetime | None
    # An email that counts toward the rule is in flight: none other goes until it is sent.
    held_by_email_in_flight: bool
    may_contact_now: bool


@dataclass(frozen=True)
class Suppression:
    address: str
    reason: str
    email_id: int | None
    since: datetime


@dataclass(frozen=True)
class TherapistCommunication:
    therapist_id: int
    known: bool  # a therapist event arrived (requests for an unknown therapist wait for one)
    deleted: bool
    contact_blocked: bool
    has_phone_hours: bool
    # Registration order, the order of the next email.
    waiting_requests: tuple[WaitingRequest, ...]
    # Accepted requests whose confirmation waits (the therapist is unknown or suppressed).
    awaiting_confirmation: tuple[int, ...]
    emails_in_flight: tuple[EmailInFlight, ...]
    last_contact_email: ContactEmail | None
    weekly_rule: WeeklyRule
    # The batch run at which the waiting requests can go by email, when nothing
    # else holds them (None: nothing waits, or they wait for something else).
    next_contact_email_at: datetime | None
    suppression: Suppression | None
    upcoming_calls: tuple[CallSummary, ...]
    # "email", or "phone_only": waiting requests go to calls (confirmations still by email).
    contact_channel: str
    # Soft-bounced emails in a row to the therapist's current address.
    soft_bounce_count: int


def communication(
    state: TherapistState,
    records: TherapistRecords,
    now: datetime,
    interval: timedelta,
    batch_schedule: Schedule,
) -> TherapistCommunication:
    profile = state.profile
    sent_at = contact_limit.sliding_window(state.contact_sent_at, now, interval)
    next_allowed = contact_limit.next_contact_at(sent_at, interval)
    if next_allowed is not None and next_allowed <= now.astimezone(UTC):
        next_allowed = None
    held = any(email.limited for email in state.in_flight.values())
    rule = WeeklyRule(
        interval_seconds=int(interval.total_seconds()),
        contact_sent_at=sent_at,
        next_contact_at=next_allowed,
        held_by_email_in_flight=held,
        may_contact_now=state.may_contact(now, interval),
    )
    blocked = profile is not None and profile.contact_blocked
    can_email = (
        profile is not None
        and not state.deleted
        and not blocked
        and state.suppression is None
        and state.contact_channel != PHONE_ONLY
    )
    next_email = None
    if state.pending and can_email and not held:
        next_email = _first_run_from(batch_schedule, max(now, next_allowed or now), now)
    suppression = state.suppression
    last = records.last_contact_email
    return TherapistCommunication(
        therapist_id=state.therapist_id,
        known=profile is not None,
        deleted=state.deleted,
        contact_blocked=blocked,
        has_phone_hours=bool(profile and profile.availability),
        waiting_requests=tuple(
            WaitingRequest(r.placement_request_id, r.patient_id, r.registered_at, r.status)
            for r in registration_order(state.pending.values())
        ),
        awaiting_confirmation=tuple(sorted(state.awaiting_confirmation)),
        emails_in_flight=_in_flight(state, records.emails),
        last_contact_email=None if last is None else ContactEmail(last.id, last.kind, last.subject, last.sent_at),
        weekly_rule=rule,
        next_contact_email_at=next_email,
        suppression=None
        if suppression is None
        else Suppression(suppression.address, suppression.reason, suppression.email_id, suppression.since),
        upcoming_calls=records.scheduled_calls,
        contact_channel=state.contact_channel,
        soft_bounce_count=_soft_bounce_count(state),
    )


def _soft_bounce_count(state: TherapistState) -> int:
    row = state.soft_bounces
    if row is None or state.profile is None or not same_address(row.address, state.profile.email):
        return 0
    return row.count


def _in_flight(state: TherapistState, stored: tuple[StoredEmail, ...]) -> tuple[EmailInFlight, ...]:
    by_key = {email.email_key: email for email in stored}
    found: list[EmailInFlight] = []
    for decided in sorted(state.in_flight.values(), key=lambda e: (e.decided_at, e.email_key)):
        row = by_key.pop(decided.email_key, None)
        found.append(
            EmailInFlight(
                email_id=None if row is None else row.id,
                email_key=decided.email_key,
                kind=decided.kind,
                status=DECIDED if row is None else row.status.value,
                counts_toward_limit=decided.limited,
                placement_request_ids=decided.placement_request_ids if row is None else row.placement_request_ids,
                decided_at=decided.decided_at,
                queued_at=None if row is None else row.queued_at,
                next_attempt_at=None if row is None else row.next_attempt_at,
                sent_at=None if row is None else row.sent_at,
            )
        )
    # Stored and on their way, but not tracked by the table (or no longer: sent or
    # failed, and the table heard of it first).
    for row in by_key.values():
        if row.sent_at is not None:
            continue
        found.append(
            EmailInFlight(
                email_id=row.id,
                email_key=row.email_key,
                kind=row.kind,
                status=row.status.value,
                counts_toward_limit=row.counts_toward_limit,
                placement_request_ids=row.placement_request_ids,
                decided_at=None,
                queued_at=row.queued_at,
                next_attempt_at=row.next_attempt_at,
                sent_at=None,
            )
        )
    return tuple(found)


def _first_run_from(plan: Schedule, moment: datetime, now: datetime) -> datetime:
    """The first batch run at ``moment`` or later (a run at ``now`` is taken as done)."""
    latest = plan.latest_at_or_before(moment)
    if latest == moment and moment > now:
        return latest
    return plan.next_after(moment)
