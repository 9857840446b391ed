"""Recording what delivery did: sent, a failed attempt (retried or for good), or
emails that will never be sent; each with the events it causes, in one transaction."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, literal, select, update
from sqlalchemy.orm import Session, object_session

from domain.decisions import CONTACT_REQUEST
from domain.retry import RetryPolicy, backoff_delay, should_retry
from domain.therapist_state import Undeliverable
from streams.delivery.mailer import SendError
from streams.messages import outputs
from streams.messages.inbox import EmailFailed, EmailSent
from streams.persistence.db import one_of
from streams.persistence.models import (
    EMAILS,
    Email,
    EmailStatus,
    TherapistDirectoryEntry,
    UTCDateTime,
)
from streams.persistence.outbox import Channels, add_rows, event_row, inbox_row

log = logging.getLogger(__name__)


def record_sent_many(session: Session, sent: Sequence[tuple[int, datetime]], channels: Channels) -> None:
    """Mark a group of emails sent in one statement and report each; emails already
    marked are left alone, so recording twice changes nothing."""
    when = dict(sent)
    table = EMAILS.c  # Core: the ORM's bulk update path costs more than the update
    sent_at = case({email_id: literal(at, UTCDateTime()) for email_id, at in when.items()}, value=table.id)
    rows = session.execute(
        update(EMAILS)
        .where(one_of(session, table.id, list(when)), table.status != EmailStatus.SENT)
        .values(
            status=EmailStatus.SENT,
            sent_at=sent_at,
            updated_at=sent_at,
            error_message=None,
            next_attempt_at=None,
            claimed_by=None,
            claim_expires_at=None,
        )
        .returning(
            table.id,
            table.therapist_id,
            table.message_id,
            table.email_key,
            table.counts_toward_limit,
            table.placement_request_ids,
        )
    ).all()
    messages = []
    for email_id, therapist_id, message_id, email_key, limited, request_ids in sorted(rows):
        at = when[email_id]
        payload = outputs.EmailSent(
            therapist_id=therapist_id,
            email_id=email_id,
            message_id=message_id,
            sent_at=at,
            placement_request_ids=request_ids,
        )
        messages.append(event_row(channels.events, payload, at))
        messages.append(inbox_row(channels, EmailSent(therapist_id, email_key, limited, at), at))
    add_rows(session, messages)


def record_failure(
    session: Session,
    email_id: int,
    error: SendError,
    now: datetime,
    policy: RetryPolicy,
    channels: Channels,
    jitter: float | None = None,
) -> bool:
    """Count a failed attempt; True when another attempt is scheduled."""
    email = session.get(Email, email_id)
    if email is None or email.status in (EmailStatus.SENT, EmailStatus.FAILED):
        return False
    email.retry_count += 1
    email.error_message = str(error)
    email.claimed_by = email.claim_expires_at = None
    retry = should_retry(error.temporary, email.retry_count, policy.max_attempts)
    if retry:
        delay = backoff_delay(email.retry_count, policy.base, policy.cap, random.random() if jitter is None else jitter)
        email.status = EmailStatus.QUEUED
        email.next_attempt_at = now + delay
    else:
        email.status = EmailStatus.FAILED
        email.next_attempt_at = None
    add_rows(session, failure_rows(email, channels, now, retry=retry, undeliverable=not retry and error.recipient))
    return retry


def failure_rows(
    email: Email, channels: Channels, now: datetime, *, retry: bool, undeliverable: bool = False
) -> list[dict[str, Any]]:
    """``email_failed`` for an attempt; when it failed for good, also an alert and
    the news to the therapist agent (a failed email no longer holds the window).

    ``undeliverable``: the recipient's address cannot be reached; the therapist agent
    suppresses email to it and sends the waiting requests to the phone."""
    failed = outputs.EmailFailed(
        therapist_id=email.therapist_id,
        email_id=email.id,
        error=email.error_message,
        retry_count=email.retry_count,
        will_retry=retry,
        next_attempt_at=email.next_attempt_at if retry else None,
    )
    rows = [event_row(channels.events, failed, now)]
    if not retry:
        message = (
            f"email {email.id} ({email.kind}) to therapist {email.therapist_id} failed "
            f"for good after {email.retry_count} attempt(s): {email.error_message}"
        )
        if undeliverable:
            message += "; " + _undeliverable_outlook(email)
        alert = outputs.Alert(
            therapist_id=email.therapist_id,
            severity="error",
            code="email_undeliverable" if undeliverable else "email_failed",
            email_id=email.id,
            message=message,
        )
        rows.append(event_row(channels.events, alert, now))
        # A contact email that never arrived: its requests wait for the next one.
        returned = tuple(b.as_request() for b in email.batches) if email.kind == CONTACT_REQUEST else ()
        unreachable = (
            Undeliverable(email.recipient_email, email.error_message or "", email.id) if undeliverable else None
        )
        failed_for_good = EmailFailed(email.therapist_id, email.email_key, returned, unreachable)
        rows.append(inbox_row(channels, failed_for_good, now))
    return rows


def _undeliverable_outlook(email: Email) -> str:
    """What happens to the therapist's requests, for the alert (from the directory
    mirror; the therapist agent decides the same from its own copy)."""
    session = object_session(email)
    entry = session.get(TherapistDirectoryEntry, email.therapist_id) if session is not None else None
    if entry is not None and entry.availability:
        return "email to this address is suppressed; the waiting requests go to a phone call"
    return (
        "email to this address is suppressed; the therapist has no phone hours, so the waiting requests "
        "wait until a therapist.updated brings a new address or staff send communication.lift_email_suppression"
    )


def fail_unsent(session: Session, therapist_id: int, reason: str, channels: Channels, now: datetime) -> None:
    """No further contact (therapist deleted or blocked): emails not yet sent fail."""
    unsent = session.scalars(
        select(Email)
        .where(Email.therapist_id == therapist_id, Email.status.in_([EmailStatus.DRAFT, EmailStatus.QUEUED]))
        .with_for_update()
    ).all()
    rows = []
    for email in unsent:
        email.status = EmailStatus.FAILED
        email.error_message = reason
        email.next_attempt_at = email.claimed_by = email.claim_expires_at = None
        email.updated_at = now
        failed = outputs.EmailFailed(
            therapist_id=therapist_id,
            email_id=email.id,
            error=reason,
            retry_count=email.retry_count,
            will_retry=False,
            next_attempt_at=None,
        )
        rows.append(event_row(channels.events, failed, now))
        rows.append(inbox_row(channels, EmailFailed(therapist_id, email.email_key), now))
    add_rows(session, rows)
