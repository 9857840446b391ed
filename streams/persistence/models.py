"""Database models, following the original design documents (``emails``,
``email_batches``; German status values) plus what delivery needs: a stable key per
email, the delivery schedule and claim, a transactional outbox and named leases."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from domain.calls import CallStatus
from domain.email_status import EmailStatus
from domain.placement import PlacementRequest

__all__ = [
    "Base",
    "CallStatus",
    "Email",
    "EmailBatch",
    "EmailLinkClick",
    "EmailOpen",
    "EmailStatus",
    "JobRun",
    "Lease",
    "OutboxMessage",
    "PhoneCall",
    "PhoneCallBatch",
    "ProcessedCommand",
    "SendRate",
    "TherapistDirectoryEntry",
    "WaitingRequest",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on PostgreSQL and SQLite alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; the service stores UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def status_column(values: type[enum.StrEnum], name: str) -> Enum:
    """Status values stored as text with a CHECK constraint (same on PostgreSQL and SQLite)."""
    return Enum(
        values,
        name=name,
        native_enum=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
        create_constraint=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONType}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Email(Base):
    __tablename__ = "emails"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Stable identity of the decision that created the email: a replayed send
    # command finds the row it already created.
    email_key: Mapped[str] = mapped_column(String(64), unique=True)
    therapist_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    template: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    body_html: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    recipient_email: Mapped[str] = mapped_column(String(255))
    recipient_name: Mapped[str] = mapped_column(String(255))
    sender_email: Mapped[str] = mapped_column(String(255))
    sender_name: Mapped[str] = mapped_column(String(255))
    placement_request_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    status: Mapped[EmailStatus] = mapped_column(status_column(EmailStatus, "emailstatus"), default=EmailStatus.DRAFT)
    queued_at: Mapped[datetime | None]
    sent_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    response_received: Mapped[bool] = mapped_column(Boolean, default=False)
    response_date: Mapped[datetime | None]
    response_content: Mapped[str | None] = mapped_column(Text)

    # RFC 5322 Message-ID, fixed at creation so that a re-send carries the same one.
    message_id: Mapped[str] = mapped_column(String(255), index=True)
    # Lower goes first: confirmations and manual emails before contact requests.
    priority: Mapped[int] = mapped_column(SmallInteger, default=3)
    oldest_registered_at: Mapped[datetime | None]
    counts_toward_limit: Mapped[bool] = mapped_column(Boolean, default=True)
    next_attempt_at: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claim_expires_at: Mapped[datetime | None]
    # When the follow-up of this (contact) email was handled: call booked, follow-up
    # email decided, or nothing left open.
    follow_up_done_at: Mapped[datetime | None]
    # When the bodies and the response lost their content (retention, or an erasure
    # that could not re-render the email): such an email is not redacted again.
    redacted_at: Mapped[datetime | None]
    # When communication.record_bounce first reported it bounced (or drew a
    # complaint): it no longer counts as having emailed its requests.
    bounced_at: Mapped[datetime | None]

    batches: Mapped[list[EmailBatch]] = relationship(
        back_populates="email", order_by="EmailBatch.position", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_emails_due", "status", "next_attempt_at"),
        Index("ix_emails_therapist_sent", "therapist_id", "sent_at"),
        Index("ix_emails_follow_up", "kind", "status", "follow_up_done_at", "sent_at"),
        # The read API lists emails newest first by (created_at, id) (streams/persistence/reads.py).
        Index("ix_emails_created", "created_at", "id"),
        # The retention job looks for content not yet redacted, by status and age.
        Index("ix_emails_retention", "redacted_at", "status", "sent_at"),
    )


class EmailBatch(Base):
    """One placement request inside one email, with the therapist's answer to it."""

    __tablename__ = "email_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    placement_request_id: Mapped[int] = mapped_column(Integer, index=True)
    patient_id: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer, default=0)
    registered_at: Mapped[datetime | None]
    # The patient details the email was rendered from (special-category data:
    # kept here and in the email, nowhere else).
    patient: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Latest status from the matching service after the email (e.g. cancelled).
    request_status: Mapped[str | None] = mapped_column(String(32))
    response_outcome: Mapped[str | None] = mapped_column(String(32))
    response_notes: Mapped[str | None] = mapped_column(Text)
    responded_at: Mapped[datetime | None]
    # When the patient details and notes were removed (retention or erasure).
    redacted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    email: Mapped[Email] = relationship(back_populates="batches")

    __table_args__ = (UniqueConstraint("email_id", "placement_request_id"),)

    def as_request(self) -> PlacementRequest:
        """The placement request as this email described it."""
        return PlacementRequest(
            self.placement_request_id, self.patient_id, self.registered_at or self.created_at, dict(self.patient)
        )


class OutboxMessage(Base):
    """A Kafka message decided in the same transaction as the change it reports,
    relayed in id order once the broker takes it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]
    # Set when the broker can never take the message (e.g. too large): it is parked
    # (published_at set) so that it does not hold up everything after it.
    failed_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_unpublished", "published_at", "id"),)


class Lease(Base):
    """A named, expiring claim: one worker at a time does the named job."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None]


class ProcessedCommand(Base):
    """A command (by its event_id) that was carried out or rejected: a replay of it
    changes nothing (CONTRACT §1)."""

    __tablename__ = "processed_commands"

    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    command_type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # "done" or "rejected"
    processed_at: Mapped[datetime] = mapped_column(default=utcnow)


class TherapistDirectoryEntry(Base):
    """The therapist directory as the database side needs it (phone availability,
    time zone, contact data), kept in step by the therapist agent."""

    __tablename__ = "therapist_directory"

    therapist_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    email: Mapped[str | None] = mapped_column(String(255))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(String(64))
    salutation: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # weekday -> [{"start": "HH:MM", "end": "HH:MM"}], already validated
    availability: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    contact_blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneCall(Base):
    __tablename__ = "phone_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Stable identity of the decision that booked it (a replay finds this row).
    call_key: Mapped[str] = mapped_column(String(64), unique=True)
    therapist_id: Mapped[int] = mapped_column(Integer, index=True)
    email_id: Mapped[int | None] = mapped_column(ForeignKey("emails.id", ondelete="SET NULL"))
    scheduled_at: Mapped[datetime]
    duration_minutes: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))  # follow_up, manual, retry
    status: Mapped[CallStatus] = mapped_column(status_column(CallStatus, "callstatus"), default=CallStatus.SCHEDULED)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    notes: Mapped[str | None] = mapped_column(Text)
    outcome_notes: Mapped[str | None] = mapped_column(Text)
    # The call time a reminder went out for: a moved call is reminded again for its
    # new time, never for the old one.
    reminder_sent_for: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # When the notes were removed (retention or erasure).
    redacted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    batches: Mapped[list[PhoneCallBatch]] = relationship(
        back_populates="call", order_by="PhoneCallBatch.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_phone_calls_due", "status", "scheduled_at"),)


class PhoneCallBatch(Base):
    """One placement request discussed in one call, with the answer given."""

    __tablename__ = "phone_call_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    phone_call_id: Mapped[int] = mapped_column(ForeignKey("phone_calls.id", ondelete="CASCADE"), index=True)
    placement_request_id: Mapped[int] = mapped_column(Integer, index=True)
    # Unknown when a person books a call about a request that was never emailed.
    patient_id: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    # When the notes were removed (retention or erasure).
    redacted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow, onupdate=utcnow)

    call: Mapped[PhoneCall] = relationship(back_populates="batches")

    __table_args__ = (UniqueConstraint("phone_call_id", "placement_request_id"),)


class WaitingRequest(Base):
    """A placement request waiting for its email, with the patient's details. The
    therapist table holds only ids and times, so that a therapist's state stays small
    however many requests wait; the details are joined in when the email is made,
    and the row goes once the request is in an email (or dropped)."""

    __tablename__ = "waiting_requests"

    placement_request_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    therapist_id: Mapped[int] = mapped_column(Integer, index=True)
    patient_id: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime]
    # Special-category data, as in email_batches.patient.
    patient: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ErasedPatient(Base):
    """A patient whose data ``communication.erase_patient`` erased, and when. The
    details of a request registered before then that reach the database afterwards
    (a ``match.created`` still on the internal topics during the erasure) are not
    stored: the request gets the erased marker, as the erasure gave the others.
    Holds the patient's id only."""

    __tablename__ = "erased_patients"

    patient_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    erased_at: Mapped[datetime]


class JobRun(Base):
    """A scheduled job's run (e.g. the daily call list at 08:00): once per run time,
    across all workers."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    done_at: Mapped[datetime] = mapped_column(default=utcnow)


class SendRate(Base):
    """A send rate kept for the service as a whole (``COMM_SMTP_RATE_LIMIT``: the
    provider counts per account, not per worker): the last send slot handed out, on
    the database's clock. Every worker and delivery process reserves its slots here,
    one at a time (streams/persistence/send_rate.py, domain/rate_limit.py)."""

    __tablename__ = "send_rates"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_slot_at: Mapped[datetime | None]


class EmailOpen(Base):
    """Opt-in tracking (COMM_TRACK_OPENS): an email's image was fetched, first when,
    and how often (mail clients that prefetch images count too)."""

    __tablename__ = "email_opens"

    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    first_opened_at: Mapped[datetime]
    last_opened_at: Mapped[datetime]
    open_count: Mapped[int] = mapped_column(Integer, default=1)


class EmailLinkClick(Base):
    """Opt-in tracking (COMM_TRACK_CLICKS): a link of an email, by its position, was
    followed, first when, and how often. The link itself stays in the email's body."""

    __tablename__ = "email_link_clicks"

    email_id: Mapped[int] = mapped_column(
        ForeignKey("emails.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    first_clicked_at: Mapped[datetime]
    last_clicked_at: Mapped[datetime]
    click_count: Mapped[int] = mapped_column(Integer, default=1)


# The tables, typed as such, for Core statements on the hot paths.
EMAILS = cast(Table, Email.__table__)
EMAIL_BATCHES = cast(Table, EmailBatch.__table__)
OUTBOX = cast(Table, OutboxMessage.__table__)
WAITING_REQUESTS = cast(Table, WaitingRequest.__table__)
