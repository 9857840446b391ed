"""``communication.erase_patient`` (GDPR Art. 17): a patient's details leave
everything the database keeps, in one transaction, deduplicated by
``processed_commands`` like every other command.

- **Waiting requests** keep their row (the request still goes out, so nothing is
  lost for matching) with ``patient_data.ERASED_PATIENT`` instead of the details: the
  therapist's email then shows the request with "the details were deleted at the
  person's request".
- **Batch entries** of the patient get the same marker and lose their answer notes.
- **Emails** with such an entry are rendered again from their batch entries
  (``email_rerendering``): the other patients in a batch email stay readable. An
  email that cannot be rendered again (a manual email) loses its content: one that
  was sent (or is being sent) keeps a German placeholder as its body; one that was
  not sent yet fails (it must not go out as written), and one that failed keeps
  empty bodies, so that it cannot be re-queued without new content. The recorded
  answer (free text) goes too.
- **Calls** about the patient's requests lose their notes, on the entry and on
  the call (free text cannot be split by patient).
- **Outbox messages** that carry the patient's details get the marker too
  (requests of a failed or followed-up email, to the therapist agent), or lose
  staff's notes (the call events): the database keeps no copy, whether they were
  relayed yet or not.

What already left the service cannot be called back: emails delivered to a
therapist's mailbox, and copies on Kafka topics until their retention
(docs/data-protection.md). ``communication.patient_erased`` reports counts, never
the erased data; an erasure that finds nothing left to erase reports zeros.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from domain.decisions import CONTACT_REQUEST
from domain.email_status import EmailStatus
from streams.email.context import Identity
from streams.messages import inbox
from streams.messages.codec import dumps
from streams.messages.commands import ErasePatient
from streams.messages.outputs import EmailFailed, PatientErased
from streams.persistence.db import one_of
from streams.persistence.email_creation import Render
from streams.persistence.email_rerendering import rerender
from streams.persistence.models import (
    Email,
    EmailBatch,
    ErasedPatient,
    OutboxMessage,
    PhoneCall,
    PhoneCallBatch,
    WaitingRequest,
)
from streams.persistence.outbox import Channels, event_row, inbox_row
from streams.persistence.patient_data import ERASED_EMAIL, ERASED_PATIENT, holds_details, placeholder_html
from streams.persistence.processed_commands import Command, Handler

log = logging.getLogger(__name__)

ERASE_PATIENT = "communication.erase_patient"
# The error of an unsent email withdrawn because it could not be rendered without the patient.
WITHDRAWN = (
    "withdrawn: it named a patient whose data was erased (communication.erase_patient); "
    "write it again without them to send it"
)
DELIVERED = frozenset({EmailStatus.SENDING, EmailStatus.SENT})
UNSENT = frozenset({EmailStatus.DRAFT, EmailStatus.QUEUED})


@dataclass
class Erased:
    waiting_requests: int = 0
    emails: int = 0
    batch_entries: int = 0
    call_entries: int = 0
    delivered_emails: int = 0


def erase_patient(
    session: Session, command: Command, channels: Channels, now: datetime, *, render: Render, identity: Identity
) -> list[dict[str, Any]]:
    patient_id = command.payload_as(ErasePatient).patient_id
    _remember(session, patient_id, now)
    erased = Erased()
    request_ids: set[int] = set()
    erased.waiting_requests = _waiting_requests(session, patient_id, request_ids, now)
    entries = _batch_entries(session, patient_id, request_ids, now)
    erased.batch_entries = len(entries)
    rows = _emails(session, sorted({entry.email_id for entry in entries}), render, identity, channels, now, erased)
    erased.call_entries, calls = _call_entries(session, patient_id, request_ids, now)
    scrubbed = _outbox(session, channels, patient_id, calls)
    log.info(
        "patient %d erased: %d waiting request(s), %d email(s) (%d delivered), %d batch entr(ies), "
        "%d call entr(ies), %d outbox message(s)",
        patient_id,
        erased.waiting_requests,
        erased.emails,
        erased.delivered_emails,
        erased.batch_entries,
        erased.call_entries,
        scrubbed,
    )
    report = PatientErased(
        therapist_id=None,
        patient_id=patient_id,
        waiting_requests=erased.waiting_requests,
        emails=erased.emails,
        batch_entries=erased.batch_entries,
        call_entries=erased.call_entries,
        delivered_emails=erased.delivered_emails,
    )
    # About a patient, not a therapist: keyed by the patient id.
    rows.append({**event_row(channels.events, report, now, causation_id=command.command_id), "key": str(patient_id)})
    return rows


def _remember(session: Session, patient_id: int, now: datetime) -> None:
    """So that details of the patient's requests still on their way are not stored later."""
    known = session.get(ErasedPatient, patient_id, with_for_update=True)
    if known is None:
        session.add(ErasedPatient(patient_id=patient_id, erased_at=now))
    else:
        known.erased_at = max(known.erased_at, now)


def _waiting_requests(session: Session, patient_id: int, request_ids: set[int], now: datetime) -> int:
    changed = 0
    for row in session.scalars(select(WaitingRequest).where(WaitingRequest.patient_id == patient_id).with_for_update()):
        request_ids.add(row.placement_request_id)
        if holds_details(row.patient):
            row.patient = dict(ERASED_PATIENT)
            row.updated_at = now
            changed += 1
    return changed


def _batch_entries(session: Session, patient_id: int, request_ids: set[int], now: datetime) -> list[EmailBatch]:
    """The patient's batch entries that still held something about them, now without it."""
    changed = []
    for entry in session.scalars(select(EmailBatch).where(EmailBatch.patient_id == patient_id).with_for_update()):
        request_ids.add(entry.placement_request_id)
        if not holds_details(entry.patient) and entry.response_notes is None:
            continue
        if holds_details(entry.patient):
            entry.patient = dict(ERASED_PATIENT)
        entry.response_notes = None
        entry.redacted_at = entry.updated_at = now
        changed.append(entry)
    return changed


def _emails(
    session: Session,
    email_ids: Sequence[int],
    render: Render,
    identity: Identity,
    channels: Channels,
    now: datetime,
    erased: Erased,
) -> list[dict[str, Any]]:
    """Render again, or empty, every email that held the patient; the events that causes."""
    if not email_ids:
        return []
    emails = session.scalars(
        select(Email).where(one_of(session, Email.id, list(email_ids))).order_by(Email.id).with_for_update()
    ).all()
    rows: list[dict[str, Any]] = []
    for email in emails:
        erased.emails += 1
        erased.delivered_emails += email.status in DELIVERED
        email.response_content = None
        email.updated_at = now
        if email.redacted_at is not None:
            continue  # its content is gone already
        rendered = rerender(session, email, render, identity)
        if rendered is not None:
            email.body_html, email.body_text = rendered.html, rendered.text
        else:
            rows.extend(_empty(email, channels, now))
    return rows


def _empty(email: Email, channels: Channels, now: datetime) -> list[dict[str, Any]]:
    """The content of an email that cannot be rendered without the patient goes; an
    unsent one fails, since it must not go out as it was written."""
    email.redacted_at = now
    if email.status in DELIVERED:
        email.body_html, email.body_text = placeholder_html(ERASED_EMAIL), ERASED_EMAIL
        return []
    email.body_html = email.body_text = ""
    if email.status not in UNSENT:
        return []
    email.status = EmailStatus.FAILED
    email.error_message = WITHDRAWN
    email.next_attempt_at = email.claimed_by = email.claim_expires_at = None
    failed = EmailFailed(
        therapist_id=email.therapist_id,
        email_id=email.id,
        error=WITHDRAWN,
        retry_count=email.retry_count,
        will_retry=False,
        next_attempt_at=None,
    )
    # It may hold the therapist's weekly window: the therapist agent lets it go (and
    # a contact email's requests wait for the next one, as after any failure).
    returned = tuple(b.as_request() for b in email.batches) if email.kind == CONTACT_REQUEST else ()
    return [
        event_row(channels.events, failed, now),
        inbox_row(channels, inbox.EmailFailed(email.therapist_id, email.email_key, returned), now),
    ]


def _call_entries(
    session: Session, patient_id: int, request_ids: Iterable[int], now: datetime
) -> tuple[int, dict[int, set[int]]]:
    """Notes of calls about the patient, on their entries and on the calls themselves:
    how many entries changed, and the calls about the patient with its requests in them."""
    about = PhoneCallBatch.patient_id == patient_id
    known = list(request_ids)
    if known:  # a call booked by staff about a request that was never emailed has no patient id
        about = or_(
            about, PhoneCallBatch.patient_id.is_(None) & one_of(session, PhoneCallBatch.placement_request_id, known)
        )
    changed = 0
    calls: dict[int, set[int]] = {}
    for entry in session.scalars(select(PhoneCallBatch).where(about).order_by(PhoneCallBatch.id).with_for_update()):
        calls.setdefault(entry.phone_call_id, set()).add(entry.placement_request_id)
        call = session.get(PhoneCall, entry.phone_call_id, with_for_update=True)
        call_notes = call is not None and (call.notes is not None or call.outcome_notes is not None)
        if entry.notes is None and not call_notes:
            continue
        entry.notes = None
        entry.redacted_at = entry.updated_at = now
        if call is not None and call_notes:
            call.notes = call.outcome_notes = None
            call.redacted_at = call.updated_at = now
        changed += 1
    return changed, calls


def _outbox(session: Session, channels: Channels, patient_id: int, calls: dict[int, set[int]]) -> int:
    """Outbox messages (relayed or not) with the patient's details: to the therapist
    agent, a failed or followed-up email's requests; on the events topic, staff's
    notes of the patient's calls (``phone_call_updated``, ``phone_call_completed``)."""
    about_patient = OutboxMessage.value.contains(f'"patient_id":{patient_id}')
    about_calls = OutboxMessage.value.contains('"communication.phone_call_')
    candidates = session.scalars(
        select(OutboxMessage)
        .where(
            or_(
                (OutboxMessage.topic == channels.inbox) & about_patient,
                (OutboxMessage.topic == channels.events) & about_calls if calls else false(),
            )
        )
        .order_by(OutboxMessage.id)
        .with_for_update()
    )
    changed = 0
    for message in candidates:
        document = json.loads(message.value)
        scrubbed = _scrub(document, patient_id) if message.topic == channels.inbox else _call_notes(document, calls)
        if scrubbed:
            message.value = dumps(document).decode("utf-8")
            changed += 1
    return changed


def _call_notes(event: dict[str, Any], calls: dict[int, set[int]]) -> bool:
    """Remove staff's notes about the patient from a call event (it stays valid: the
    notes of ``phone_call_updated`` are omitted when there are none, an outcome's are null)."""
    payload = event.get("payload") or {}
    call_id = payload.get("phone_call_id")
    requests = calls.get(call_id) if isinstance(call_id, int) else None
    if requests is None:
        return False
    found = False
    if event.get("event_type") == "communication.phone_call_updated" and payload.get("notes") is not None:
        del payload["notes"]
        found = True
    if event.get("event_type") == "communication.phone_call_completed":
        for outcome in payload.get("outcomes") or ():
            if outcome.get("placement_request_id") in requests and outcome.get("notes") is not None:
                outcome["notes"] = None
                found = True
    return found


def _scrub(value: Any, patient_id: int) -> bool:
    """Replace the details of every request of ``patient_id`` inside ``value``."""
    found = False
    if isinstance(value, dict):
        if value.get("patient_id") == patient_id and holds_details(value.get("patient")):
            value["patient"] = dict(ERASED_PATIENT)
            found = True
        for item in value.values():
            found = _scrub(item, patient_id) or found
    elif isinstance(value, list):
        for item in value:
            found = _scrub(item, patient_id) or found
    return found


def handlers(render: Render, identity: Identity) -> dict[str, Handler]:
    """The erasure command, with what it needs to render emails again."""
    return {ERASE_PATIENT: partial(erase_patient, render=render, identity=identity)}
