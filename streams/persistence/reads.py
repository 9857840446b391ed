"""What the read-only API (streams/api) reads from the database: emails, their batch
entries and answers, phone calls and what the database knows about one therapist.

Every function here only reads. Lists are keyset-paginated: a page is what follows
a position in a total order, never an offset, so rows that arrive while a client
pages are not returned twice, and none that were there is skipped. Emails are
ordered newest first by ``(created_at, id)``: ``created_at`` is set once, when the
email is stored, and never changes, so an email's place in the order is fixed.
Phone calls are ordered by ``(scheduled_at, id)``, the order staff work through
them; a call that is moved while a client pages moves in that order too.

The field names of the results are those of the API's JSON documents.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from streams.persistence.models import (
    EMAILS,
    CallStatus,
    Email,
    EmailBatch,
    EmailStatus,
    PhoneCall,
    PhoneCallBatch,
)
from streams.persistence.tracking import Engagement, engagement

# A read must not hold a connection long on a database in trouble (PostgreSQL).
STATEMENT_TIMEOUT_MS = 5000
# Emails on their way out: stored and queued, or being sent.
ON_THEIR_WAY = (EmailStatus.QUEUED, EmailStatus.SENDING)


# --- emails --------------------------------------------------------------------


@dataclass(frozen=True)
class EmailQuery:
    therapist_id: int | None = None
    statuses: tuple[EmailStatus, ...] = ()
    kinds: tuple[str, ...] = ()
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    limit: int = 50
    # The position of the last email of the page before: (created_at, id).
    after: tuple[datetime, int] | None = None


@dataclass(frozen=True)
class EmailSummary:
    id: int
    therapist_id: int
    kind: str
    template: str | None
    subject: str
    status: EmailStatus
    recipient_email: str
    placement_request_ids: tuple[int, ...]
    created_at: datetime
    queued_at: datetime | None
    sent_at: datetime | None
    retry_count: int
    response_received: bool


@dataclass(frozen=True)
class EmailPage:
    emails: tuple[EmailSummary, ...]
    # Where the next page starts, or None when this one is the last.
    next_after: tuple[datetime, int] | None


_SUMMARY_COLUMNS = (
    EMAILS.c.id,
    EMAILS.c.therapist_id,
    EMAILS.c.kind,
    EMAILS.c.template,
    EMAILS.c.subject,
    EMAILS.c.status,
    EMAILS.c.recipient_email,
    EMAILS.c.placement_request_ids,
    EMAILS.c.created_at,
    EMAILS.c.queued_at,
    EMAILS.c.sent_at,
    EMAILS.c.retry_count,
    EMAILS.c.response_received,
)


def list_emails(session: Session, query: EmailQuery) -> EmailPage:
    """Newest first, without bodies: one page of ``query.limit`` after ``query.after``."""
    _bound_time(session)
    statement = select(*_SUMMARY_COLUMNS)
    if query.therapist_id is not None:
        statement = statement.where(EMAILS.c.therapist_id == query.therapist_id)
    if query.statuses:
        statement = statement.where(EMAILS.c.status.in_(query.statuses))
    if query.kinds:
        statement = statement.where(EMAILS.c.kind.in_(query.kinds))
    if query.since is not None:
        statement = statement.where(EMAILS.c.created_at >= query.since)
    if query.until is not None:
        statement = statement.where(EMAILS.c.created_at < query.until)
    if query.after is not None:
        statement = statement.where(_beyond(EMAILS.c.created_at, EMAILS.c.id, query.after, newest_first=True))
    statement = statement.order_by(EMAILS.c.created_at.desc(), EMAILS.c.id.desc()).limit(query.limit + 1)
    rows = session.execute(statement).all()
    emails = tuple(
        EmailSummary(
            id=row.id,
            therapist_id=row.therapist_id,
            kind=row.kind,
            template=row.template,
            subject=row.subject,
            status=EmailStatus(row.status),
            recipient_email=row.recipient_email,
            placement_request_ids=tuple(row.placement_request_ids or ()),
            created_at=row.created_at,
            queued_at=row.queued_at,
            sent_at=row.sent_at,
            retry_count=row.retry_count,
            response_received=row.response_received,
        )
        for row in rows[: query.limit]
    )
    more = len(rows) > query.limit
    return EmailPage(emails, (emails[-1].created_at, emails[-1].id) if more else None)


@dataclass(frozen=True)
class BatchEntry:
    """One placement request in an email, with the therapist's answer to it."""

    placement_request_id: int
    patient_id: int
    position: int
    registered_at: datetime | None
    request_status: str | None  # the matching service's latest word on it, after the email
    response_outcome: str | None
    response_notes: str | None
    responded_at: datetime | None


@dataclass(frozen=True)
class EmailDetail:
    id: int
    email_key: str
    therapist_id: int
    kind: str
    template: str | None
    subject: str
    body_html: str
    body_text: str
    recipient_email: str
    recipient_name: str
    sender_email: str
    sender_name: str
    message_id: str
    placement_request_ids: tuple[int, ...]
    counts_toward_limit: bool
    status: EmailStatus
    created_at: datetime
    updated_at: datetime | None
    queued_at: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    retry_count: int
    error_message: str | None
    response_received: bool
    response_date: datetime | None
    response_content: str | None
    batches: tuple[BatchEntry, ...]
    phone_call_ids: tuple[int, ...]  # calls that follow this email up
    tracking: Engagement  # opt-in opens and clicks (all zero while tracking is off)


def email_detail(session: Session, email_id: int) -> EmailDetail | None:
    _bound_time(session)
    email = session.get(Email, email_id)
    if email is None:
        return None
    calls = session.scalars(select(PhoneCall.id).where(PhoneCall.email_id == email_id).order_by(PhoneCall.id))
    return EmailDetail(
        id=email.id,
        email_key=email.email_key,
        therapist_id=email.therapist_id,
        kind=email.kind,
        template=email.template,
        subject=email.subject,
        body_html=email.body_html,
        body_text=email.body_text,
        recipient_email=email.recipient_email,
        recipient_name=email.recipient_name,
        sender_email=email.sender_email,
        sender_name=email.sender_name,
        message_id=email.message_id,
        placement_request_ids=tuple(email.placement_request_ids or ()),
        counts_toward_limit=email.counts_toward_limit,
        status=email.status,
        created_at=email.created_at,
        updated_at=email.updated_at,
        queued_at=email.queued_at,
        next_attempt_at=email.next_attempt_at,
        sent_at=email.sent_at,
        retry_count=email.retry_count,
        error_message=email.error_message,
        response_received=email.response_received,
        response_date=email.response_date,
        response_content=email.response_content,
        batches=tuple(_batch_entry(batch) for batch in email.batches),
        phone_call_ids=tuple(calls),
        tracking=engagement(session, email_id),
    )


def _batch_entry(batch: EmailBatch) -> BatchEntry:
    return BatchEntry(
        placement_request_id=batch.placement_request_id,
        patient_id=batch.patient_id,
        position=batch.position,
        registered_at=batch.registered_at,
        request_status=batch.request_status,
        response_outcome=batch.response_outcome,
        response_notes=batch.response_notes,
        responded_at=batch.responded_at,
    )


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
    _bound_time(session)
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
        statement = statement.where(_beyond(PhoneCall.scheduled_at, PhoneCall.id, query.after, newest_first=False))
    statement = statement.order_by(PhoneCall.scheduled_at, PhoneCall.id).limit(query.limit + 1)
    calls = list(session.scalars(statement))
    page = calls[: query.limit]
    requests = _requests_of(session, [call.id for call in page])
    summaries = tuple(_call_summary(call, requests.get(call.id, ())) for call in page)
    more = len(calls) > query.limit
    return CallPage(summaries, (summaries[-1].scheduled_at, summaries[-1].id) if more else None)


def _beyond(
    time: ColumnElement[datetime] | InstrumentedAttribute[datetime],
    id_: ColumnElement[int] | InstrumentedAttribute[int],
    after: tuple[datetime, int],
    *,
    newest_first: bool,
) -> ColumnElement[bool]:
    """Keyset pagination: the rows that come after ``after`` = (time, id) in the order
    (time, id), descending when ``newest_first``."""
    at, row_id = after
    if newest_first:
        return or_(time < at, and_(time == at, id_ < row_id))
    return or_(time > at, and_(time == at, id_ > row_id))


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
    _bound_time(session)
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
    _bound_time(session)
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


def _bound_time(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
