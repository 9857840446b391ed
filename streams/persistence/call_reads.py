"""What the read-only API (streams/api) reads from the database about phone calls
(lists of them, one call with its requests) and about one therapist (the emails on
their way out, the last contact email, the calls still to be made).

Every function here only reads. Phone calls are ordered by ``(scheduled_at, id)``,
the order staff work through them, and keyset-paginated as the emails are
(``streams.persistence.reads``); a call that is moved while a client pages moves in
that order too.

The field names of the results are those of the API's JSON documents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from streams.persistence.models import CallStatus, Email, EmailStatus, PhoneCall, PhoneCallBatch
from streams.persistence.reads import beyond, bound_time

# Emails on their way out: stored and queued, or being sent.
ON_THEIR_WAY = (EmailStatus.QUEUED, EmailStatus.SENDING)


# --- phone calls -----------------------------------------------------------------


@dataclass(frozen=True)
class CallQuery:
    therapist_id: int | None = None
    statuses: tuple[CallStatus, ...] = ()
    scheduled_from: datetime | None = None  # at or after
    scheduled_before: datetime | None = None
    limit: int = 50
    # The position of the last call of the page before: (scheduled_at, id).
    after: tuple[datetime, int] | None = None


@dataclass(frozen=True)
class CallSummary:
    id: int
    therapist_id: int
    email_id: int | None
    scheduled_at: datetime
    duration_minutes: int
    reason: str
    status: CallStatus
    attempt: int
    placement_request_ids: tuple[int, ...]


@dataclass(frozen=True)
class CallPage:
    phone_calls: tuple[CallSummary, ...]
    next_after: tuple[datetime, int] | None


def list_calls(session: Session, query: CallQuery) -> CallPage:
    """In the order of their times: one page of ``query.limit`` after ``query.after``."""
    bound_time(session)
    statement = select(PhoneCall)
    if query.therapist_id is not None:
        statement = statement.where(PhoneCall.therapist_id == query.therapist_id)
    if query.statuses:
        statement = statement.where(PhoneCall.status.in_(query.statuses))
    if query.scheduled_from is not None:
        statement = statement.where(PhoneCall.scheduled_at >= query.scheduled_from)
    if query.scheduled_before is not None:
        statement = statement.where(PhoneCall.scheduled_at < query.scheduled_before)
    if query.after is not None:
        statement = statement.where(beyond(PhoneCall.scheduled_at, PhoneCall.id, query.after, newest_first=False))
    statement = statement.order_by(PhoneCall.scheduled_at, PhoneCall.id).limit(query.limit + 1)
    calls = list(session.scalars(statement))
    page = calls[: query.limit]
    requests = _requests_of(session, [call.id for call in page])
    summaries = tuple(_call_summary(call, requests.get(call.id, ())) for call in page)
    more = len(calls) > query.limit
    return CallPage(summaries, (summaries[-1].scheduled_at, summaries[-1].id) if more else None)


def _requests_of(session: Session, call_ids: Sequence[int]) -> dict[int, tuple[int, ...]]:
    if not call_ids:
        return {}
    found: dict[int, list[int]] = defaultdict(list)
    rows = session.execute(
        select(PhoneCallBatch.phone_call_id, PhoneCallBatch.placement_request_id)
        .where(PhoneCallBatch.phone_call_id.in_(call_ids))
        .order_by(PhoneCallBatch.phone_call_id, PhoneCallBatch.id)
    )
    for call_id, request_id in rows:
        found[call_id].append(request_id)
    return {call_id: tuple(ids) for call_id, ids in found.items()}


def _call_summary(call: PhoneCall, request_ids: Iterable[int]) -> CallSummary:
    return CallSummary(
        id=call.id,
        therapist_id=call.therapist_id,
        email_id=call.email_id,
        scheduled_at=call.scheduled_at,
        duration_minutes=call.duration_minutes,
        reason=call.reason,
        status=call.status,
        attempt=call.attempt,
        placement_request_ids=tuple(request_ids),
    )


@dataclass(frozen=True)
class CallRequest:
    """One placement request discussed in a call, with the answer given."""

    placement_request_id: int
    patient_id: int | None
    outcome: str | None
    notes: str | None


@dataclass(frozen=True)
class CallDetail:
    id: int
    therapist_id: int
    email_id: int | None
    scheduled_at: datetime
    duration_minutes: int
    reason: str
    status: CallStatus
    attempt: int
    notes: str | None
    outcome_notes: str | None
    reminder_sent_for: datetime | None
    completed_at: datetime | None
    cancel_reason: str | None
    created_at: datetime
    updated_at: datetime | None
    requests: tuple[CallRequest, ...]


def call_detail(session: Session, call_id: int) -> CallDetail | None:
    bound_time(session)
    call = session.get(PhoneCall, call_id)
    if call is None:
        return None
    return CallDetail(
        id=call.id,
        therapist_id=call.therapist_id,
        email_id=call.email_id,
        scheduled_at=call.scheduled_at,
        duration_minutes=call.duration_minutes,
        reason=call.reason,
        status=call.status,
        attempt=call.attempt,
        notes=call.notes,
        outcome_notes=call.outcome_notes,
        reminder_sent_for=call.reminder_sent_for,
        completed_at=call.completed_at,
        cancel_reason=call.cancel_reason,
        created_at=call.created_at,
        updated_at=call.updated_at,
        requests=tuple(CallRequest(b.placement_request_id, b.patient_id, b.outcome, b.notes) for b in call.batches),
    )


# --- one therapist ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredEmail:
    """An email of the therapist as the database holds it (no content)."""

    id: int
    email_key: str
    kind: str
    subject: str
    status: EmailStatus
    counts_toward_limit: bool
    placement_request_ids: tuple[int, ...]
    queued_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class TherapistRecords:
    """What the database knows about one therapist's communication; the therapist
    table (streams/api/therapist_view.py) knows the rest."""

    # The latest email sent that counts toward the weekly rule.
    last_contact_email: StoredEmail | None
    # Emails on their way out, and those named by ``email_keys`` whatever their status.
    emails: tuple[StoredEmail, ...]
    # Calls still to be made, in the order of their times.
    scheduled_calls: tuple[CallSummary, ...]


def therapist_records(session: Session, therapist_id: int, email_keys: Sequence[str]) -> TherapistRecords:
    bound_time(session)
    last = session.scalars(
        select(Email)
        .where(
            Email.therapist_id == therapist_id,
            Email.counts_toward_limit.is_(True),
            Email.status == EmailStatus.SENT,
        )
        .order_by(Email.sent_at.desc(), Email.id.desc())
        .limit(1)
    ).first()
    wanted: ColumnElement[bool] = Email.status.in_(ON_THEIR_WAY)
    if email_keys:
        wanted = or_(wanted, Email.email_key.in_(list(email_keys)))
    emails = session.scalars(select(Email).where(Email.therapist_id == therapist_id, wanted).order_by(Email.id))
    calls = list(
        session.scalars(
            select(PhoneCall)
            .where(PhoneCall.therapist_id == therapist_id, PhoneCall.status == CallStatus.SCHEDULED)
            .order_by(PhoneCall.scheduled_at, PhoneCall.id)
        )
    )
    requests = _requests_of(session, [call.id for call in calls])
    return TherapistRecords(
        last_contact_email=None if last is None else _stored(last),
        emails=tuple(_stored(email) for email in emails),
        scheduled_calls=tuple(_call_summary(call, requests.get(call.id, ())) for call in calls),
    )


def _stored(email: Email) -> StoredEmail:
    return StoredEmail(
        id=email.id,
        email_key=email.email_key,
        kind=email.kind,
        subject=email.subject,
        status=email.status,
        counts_toward_limit=email.counts_toward_limit,
        placement_request_ids=tuple(email.placement_request_ids or ()),
        queued_at=email.queued_at,
        next_attempt_at=email.next_attempt_at,
        sent_at=email.sent_at,
    )
