"""The email commands of ``communication-commands``: edit and queue an email, record
an answer to it or to one of its requests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain import email_status
from domain.decisions import CONTACT_REQUEST
from domain.email_status import EmailStatus
from streams.email.html_text import html_to_text
from streams.email.sanitiser import clean_html
from streams.messages.commands import Outcome, RecordEmailResponse, UpdateEmail, UpdateEmailBatch
from streams.messages.output_envelope import OutputPayload
from streams.messages.outputs import (
    EmailField,
    EmailQueued,
    EmailResponse,
    EmailResponseRecorded,
    EmailUpdated,
    PlacementResponse,
)
from streams.persistence.models import Email, EmailBatch
from streams.persistence.outbox import Channels, event_row
from streams.persistence.processed_commands import Command, Handler, Rejected
from streams.persistence.settled_requests import drop_from_calls


def _email(session: Session, email_id: int) -> Email:
    email = session.get(Email, email_id, with_for_update=True)
    if email is None:
        raise Rejected(f"there is no email {email_id}")
    return email


def _event(channels: Channels, payload: OutputPayload, command: Command, now: datetime) -> dict[str, Any]:
    return event_row(channels.events, payload, now, causation_id=command.command_id)


def update_email(session: Session, command: Command, channels: Channels, now: datetime) -> list[dict[str, Any]]:
    p = command.payload_as(UpdateEmail)
    email = _email(session, p.email_id)
    refusal = email_status.update_refusal(email.status, p.status)
    if refusal:
        raise Rejected(f"email {email.id}: {refusal}")
    changed: list[EmailField] = []
    if p.subject is not None:
        email.subject = p.subject
        changed.append("subject")
    if p.body_html is not None:
        email.body_html = clean_html(p.body_html)
        changed.append("body_html")
        if p.body_text is None:
            email.body_text = html_to_text(email.body_html)
            changed.append("body_text")
    if p.body_text is not None:
        email.body_text = p.body_text
        changed.append("body_text")
    email.updated_at = now
    events = []
    if changed:
        events.append(
            _event(
                channels,
                EmailUpdated(therapist_id=email.therapist_id, email_id=email.id, changed=changed, status=email.status),
                command,
                now,
            )
        )
    if p.status == EmailStatus.QUEUED:
        _may_queue(session, email)
        # A draft goes out; a failed email gets a fresh set of attempts.
        email.status = EmailStatus.QUEUED
        email.queued_at = email.next_attempt_at = now
        email.retry_count = 0
        email.error_message = None
        email.claimed_by = email.claim_expires_at = None
        events.append(_event(channels, EmailQueued(therapist_id=email.therapist_id, email_id=email.id), command, now))
    return events


def _may_queue(session: Session, email: Email) -> None:
    if not email.body_text.strip() or not email.body_html.strip():
        raise Rejected(f"email {email.id} has no content (its template failed): give subject and body_html")
    if email.kind == CONTACT_REQUEST and email.status is EmailStatus.FAILED:
        # Its requests went back to the therapist's waiting list; they may have gone
        # out in another email since, and must not go out twice.
        again = session.scalars(
            select(EmailBatch.email_id)
            .join(Email)
            .where(
                EmailBatch.placement_request_id.in_(email.placement_request_ids),
                Email.id != email.id,
                Email.kind == CONTACT_REQUEST,
                Email.status != EmailStatus.FAILED,
            )
            .limit(1)
        ).first()
        if again is not None:
            raise Rejected(f"email {email.id}: its placement requests went out again in email {again}")


def _answerable(session: Session, email_id: int) -> tuple[Email, dict[int, EmailBatch]]:
    email = _email(session, email_id)
    refusal = email_status.response_refusal(email.status)
    if refusal:
        raise Rejected(f"email {email.id}: {refusal}")
    batches = {
        b.placement_request_id: b
        for b in session.scalars(select(EmailBatch).where(EmailBatch.email_id == email.id).with_for_update())
    }
    return email, batches


def _not_in_email(email: Email, batches: Mapping[int, EmailBatch], request_ids: list[int]) -> None:
    missing = [r for r in request_ids if r not in batches]
    if missing:
        contained = ", ".join(str(r) for r in sorted(batches)) or "none"
        raise Rejected(
            f"email {email.id} is not about placement request(s) {', '.join(map(str, missing))} "
            f"(it is about: {contained})"
        )


def _placement_response(
    channels: Channels, email: Email, batch: EmailBatch, outcome: Outcome, command: Command, now: datetime
) -> dict[str, Any]:
    payload = PlacementResponse(
        therapist_id=email.therapist_id,
        placement_request_id=batch.placement_request_id,
        patient_id=batch.patient_id,
        outcome=outcome,
        channel="email",
        email_id=email.id,
    )
    return _event(channels, payload, command, now)


def record_email_response(
    session: Session, command: Command, channels: Channels, now: datetime
) -> list[dict[str, Any]]:
    p = command.payload_as(RecordEmailResponse)
    email, batches = _answerable(session, p.email_id)
    responses = p.responses
    request_ids = [r.placement_request_id for r in responses]
    _not_in_email(email, batches, request_ids)
    if len(set(request_ids)) != len(request_ids):
        raise Rejected(f"email {email.id}: a placement request is answered twice in one response")
    received_at = p.received_at
    email.response_received = True
    email.response_date = received_at
    email.response_content = p.content
    email.updated_at = now
    events = [
        _event(
            channels,
            EmailResponseRecorded(
                therapist_id=email.therapist_id,
                email_id=email.id,
                received_at=received_at,
                responses=[
                    EmailResponse(placement_request_id=r.placement_request_id, outcome=r.outcome) for r in responses
                ],
            ),
            command,
            now,
        )
    ]
    for response in responses:
        batch = batches[response.placement_request_id]
        batch.response_outcome = response.outcome
        batch.responded_at = received_at
        batch.updated_at = now
        events.append(_placement_response(channels, email, batch, response.outcome, command, now))
    # Answered requests are not followed up; an answer without outcomes answers all.
    answered = request_ids or list(batches)
    events += drop_from_calls(session, channels.events, answered, "answered by email", now, command.command_id)
    return events


def update_email_batch(session: Session, command: Command, channels: Channels, now: datetime) -> list[dict[str, Any]]:
    p = command.payload_as(UpdateEmailBatch)
    email, batches = _answerable(session, p.email_id)
    _not_in_email(email, batches, [p.placement_request_id])
    batch = batches[p.placement_request_id]
    batch.response_outcome = p.outcome
    if p.notes is not None:
        batch.response_notes = p.notes
    batch.responded_at = batch.responded_at or now
    batch.updated_at = now
    return [
        _placement_response(channels, email, batch, p.outcome, command, now),
        *drop_from_calls(session, channels.events, [batch.placement_request_id], "answered", now, command.command_id),
    ]


HANDLERS: dict[str, Handler] = {
    "communication.update_email": update_email,
    "communication.record_email_response": record_email_response,
    "communication.update_email_batch": update_email_batch,
}
