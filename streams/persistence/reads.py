"""What the read-only API (streams/api) reads from the database about emails: lists
of them, one email with its batch entries and answers; and what every read here
and in ``streams.persistence.call_reads`` (phone calls, one therapist) shares.

Every function here only reads. Lists are keyset-paginated: a page is what follows
a position in a total order, never an offset, so rows that arrive while a client
pages are not returned twice, and none that were there is skipped. Emails are
ordered newest first by ``(created_at, id)``: ``created_at`` is set once, when the
email is stored, and never changes, so an email's place in the order is fixed.

The field names of the results are those of the API's JSON documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from streams.persistence.models import EMAILS, Email, EmailBatch, EmailStatus, PhoneCall
from streams.persistence.tracking import Engagement, engagement

# A read must not hold a connection long on a database in trouble (PostgreSQL).
STATEMENT_TIMEOUT_MS = 5000


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
    bound_time(session)
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
        statement = statement.where(beyond(EMAILS.c.created_at, EMAILS.c.id, query.after, newest_first=True))
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
    bound_time(session)
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


# --- shared by the reads ---------------------------------------------------------


def beyond(
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


def bound_time(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
