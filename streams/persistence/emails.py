"""Units of work on emails: store a send command, claim due emails, record results.

Each function runs inside one transaction (``Database.run``) and writes the events
it causes to the outbox in that same transaction, so the database and what the
service reports can never disagree.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from domain.contact_limit import next_contact_at
from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.retry import backoff_delay, should_retry
from streams.codec import dumps
from streams.email_message import OutgoingEmail, message_id_for
from streams.mailer import SendError
from streams.persistence.models import Email, EmailBatch, EmailStatus
from streams.persistence.outbox import add_event, add_message
from streams.rendering import RenderedEmail, RenderError

log = logging.getLogger(__name__)

# Lower goes first when many emails are due at once.
PRIORITY = {CONFIRMATION: 0, MANUAL: 1, FOLLOW_UP: 2, CONTACT_REQUEST: 3}
PATIENT_FIELDS = (
    "first_name",
    "last_name",
    "gender",
    "age",
    "insurance",
    "diagnosis",
    "availability",
    "notes",
)


@dataclass(frozen=True)
class Channels:
    """Where the outbox sends what a unit of work reports."""

    events: str  # communication-events (public)
    inbox: str  # the therapist agent's inbox (internal feedback)


@dataclass(frozen=True)
class Identity:
    sender_email: str
    sender_name: str


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base: timedelta
    cap: timedelta


@dataclass(frozen=True)
class ClaimedEmail:
    id: int
    email_key: str
    therapist_id: int
    kind: str
    limited: bool
    placement_request_ids: tuple[int, ...]
    outgoing: OutgoingEmail


class Render(Protocol):
    def __call__(self, template: str, context: Mapping[str, Any], therapist_id: int | None = None) -> RenderedEmail: ...


def recipient_name(therapist: Mapping[str, Any]) -> str:
    parts = [therapist.get("title"), therapist.get("first_name"), therapist.get("last_name")]
    return " ".join(str(p) for p in parts if p)


def patient_context(request: Mapping[str, Any]) -> dict[str, Any]:
    patient = request.get("patient") or {}
    context = {name: patient.get(name) for name in PATIENT_FIELDS}
    context["registered_at"] = request.get("registered_at")
    context["placement_request_id"] = request["placement_request_id"]
    return context


def email_context(
    therapist: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], identity: Identity
) -> dict[str, Any]:
    return {
        "therapist": {
            name: therapist.get(name) for name in ("title", "salutation", "first_name", "last_name", "email", "phone")
        },
        "patients": [patient_context(r) for r in requests],
        "sender": {"name": identity.sender_name, "email": identity.sender_email},
    }


def _feedback(session: Session, channels: Channels, therapist_id: int, body: dict[str, Any], now: datetime) -> None:
    add_message(session, channels.inbox, str(therapist_id), dumps({**body, "therapist_id": therapist_id}), now)


def _abandon(session: Session, channels: Channels, therapist_id: int, email_key: str, now: datetime) -> None:
    """Tell the therapist agent that a decided email will not go out, so it stops
    holding the therapist's window for it."""
    _feedback(session, channels, therapist_id, {"kind": "email_failed", "email_key": email_key}, now)


def store_send_command(
    session: Session,
    command: Mapping[str, Any],
    render: Render,
    identity: Identity,
    channels: Channels,
    now: datetime,
) -> int | None:
    """Create the email a send command describes; None if it exists already (replay)."""
    key = command["email_key"]
    if session.scalar(select(Email.id).where(Email.email_key == key)) is not None:
        return None
    therapist = command["therapist"]
    therapist_id = int(therapist["therapist_id"])
    kind = command["email_kind"]
    requests = list(command["requests"])
    if kind == CONTACT_REQUEST:
        requests = _not_yet_emailed(session, requests)
        if not requests:
            log.warning("email %s: every request in it was already emailed; not created", key)
            _abandon(session, channels, therapist_id, key, now)
            return None
    elif kind == CONFIRMATION:
        requests = [_with_known_patient(session, r) for r in requests]

    email = Email(
        email_key=key,
        therapist_id=therapist_id,
        kind=kind,
        template=command["template"],
        recipient_email=therapist["email"],
        recipient_name=recipient_name(therapist),
        sender_email=identity.sender_email,
        sender_name=identity.sender_name,
        placement_request_ids=[int(r["placement_request_id"]) for r in requests],
        message_id=message_id_for(key, identity.sender_email),
        priority=PRIORITY.get(kind, PRIORITY[CONTACT_REQUEST]),
        oldest_registered_at=min((datetime.fromisoformat(r["registered_at"]) for r in requests), default=None),
        counts_toward_limit=bool(command.get("limited", kind != CONFIRMATION)),
        retry_count=0,
        created_at=now,
        batches=[
            EmailBatch(
                placement_request_id=int(r["placement_request_id"]),
                patient_id=int(r["patient_id"]),
                position=position,
                registered_at=datetime.fromisoformat(r["registered_at"]),
                patient=dict(r.get("patient") or {}),
                created_at=now,
            )
            for position, r in enumerate(requests)
        ],
    )
    try:
        rendered = render(command["template"], email_context(therapist, requests, identity), therapist_id)
    except RenderError as exc:
        email.subject, email.body_html, email.body_text = f"({command['template']})", "", ""
        email.status = EmailStatus.FAILED
        email.error_message = str(exc)
    else:
        email.subject, email.body_html, email.body_text = rendered.subject, rendered.html, rendered.text
        email.status = EmailStatus.QUEUED
        email.queued_at = now
        email.next_attempt_at = now
    session.add(email)
    session.flush()

    causation = command.get("causation_id")
    add_event(
        session,
        channels.events,
        "communication.email_created",
        therapist_id,
        {
            "email_id": email.id,
            "kind": kind,
            "template": email.template,
            "subject": email.subject,
            "placement_request_ids": email.placement_request_ids,
            "status": email.status.value,
        },
        now,
        causation_id=causation,
    )
    if email.status is EmailStatus.QUEUED:
        add_event(
            session,
            channels.events,
            "communication.email_queued",
            therapist_id,
            {"email_id": email.id},
            now,
            causation_id=causation,
        )
        if rendered.fallback_reason is not None:
            # A broken per-therapist template must not block the email: it went
            # out with the standard wording, and a person is told to fix it.
            add_event(
                session,
                channels.events,
                "communication.alert",
                therapist_id,
                {
                    "severity": "warning",
                    "code": "template_override_broken",
                    "email_id": email.id,
                    "message": f"email {email.id}: the therapist's own template could not be used, "
                    f"the standard template was: {rendered.fallback_reason}",
                },
                now,
                causation_id=causation,
            )
    else:
        _report_final_failure(session, email, channels, now)
    return email.id


def _not_yet_emailed(session: Session, requests: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Second line of defence for "a placement request is emailed about once": the
    table recognises replays for a retention period; the database remembers forever."""
    ids = [int(r["placement_request_id"]) for r in requests]
    emailed = set(
        session.scalars(
            select(EmailBatch.placement_request_id)
            .join(Email)
            .where(
                EmailBatch.placement_request_id.in_(ids),
                Email.kind == CONTACT_REQUEST,
                Email.status != EmailStatus.FAILED,
            )
        )
    )
    return [r for r in requests if int(r["placement_request_id"]) not in emailed]


def _with_known_patient(session: Session, request: Mapping[str, Any]) -> Mapping[str, Any]:
    """A confirmation for a request that already left the table: take the patient
    details from the email the request went out in."""
    if request.get("patient"):
        return request
    batch = session.scalars(
        select(EmailBatch)
        .where(EmailBatch.placement_request_id == int(request["placement_request_id"]))
        .order_by(EmailBatch.id.desc())
        .limit(1)
    ).first()
    if batch is None:
        return request
    registered = batch.registered_at.isoformat() if batch.registered_at else request["registered_at"]
    return {**request, "patient": batch.patient, "registered_at": registered}


def claim_due(
    session: Session,
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
    contact_interval: timedelta,
) -> list[ClaimedEmail]:
    """Claim up to ``limit`` due emails for ``worker``, most urgent first.

    Due: queued and its time has come, or "being sent" by a worker whose claim ran
    out (it died between claiming and recording): that one is sent again, with the
    same Message-ID.
    """
    due = or_(
        and_(Email.status == EmailStatus.QUEUED, Email.next_attempt_at <= now),
        and_(Email.status == EmailStatus.SENDING, Email.claim_expires_at < now),
    )
    query = (
        select(Email)
        .where(due)
        .order_by(Email.priority, Email.oldest_registered_at.asc().nulls_last(), Email.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    emails = list(session.scalars(query))
    last_sent = _last_limited_send(session, {e.therapist_id for e in emails if e.counts_toward_limit})
    claimed: list[ClaimedEmail] = []
    limited_in_this_claim: set[int] = set()
    for email in emails:
        if email.counts_toward_limit:
            previous = last_sent.get(email.therapist_id)
            allowed_at = next_contact_at([previous] if previous else [], contact_interval)
            if email.therapist_id in limited_in_this_claim or (allowed_at and now < allowed_at):
                # The weekly rule, checked once more against what was really sent.
                email.status = EmailStatus.QUEUED
                email.next_attempt_at = allowed_at if allowed_at and allowed_at > now else now + contact_interval
                email.claimed_by = email.claim_expires_at = None
                log.warning(
                    "email %s to therapist %s held back until %s by the contact limit",
                    email.id,
                    email.therapist_id,
                    email.next_attempt_at.isoformat(),
                )
                continue
            limited_in_this_claim.add(email.therapist_id)
        email.status = EmailStatus.SENDING
        email.claimed_by = worker
        email.claim_expires_at = now + lease
        claimed.append(_snapshot(email))
    return claimed


def _last_limited_send(session: Session, therapist_ids: set[int]) -> dict[int, datetime]:
    if not therapist_ids:
        return {}
    rows = session.execute(
        select(Email.therapist_id, func.max(Email.sent_at))
        .where(
            Email.therapist_id.in_(therapist_ids),
            Email.counts_toward_limit.is_(True),
            Email.status == EmailStatus.SENT,
        )
        .group_by(Email.therapist_id)
    )
    return {therapist_id: sent_at for therapist_id, sent_at in rows if sent_at is not None}


def _snapshot(email: Email) -> ClaimedEmail:
    return ClaimedEmail(
        id=email.id,
        email_key=email.email_key,
        therapist_id=email.therapist_id,
        kind=email.kind,
        limited=email.counts_toward_limit,
        placement_request_ids=tuple(email.placement_request_ids),
        outgoing=OutgoingEmail(
            message_id=email.message_id,
            sender_email=email.sender_email,
            sender_name=email.sender_name,
            recipient_email=email.recipient_email,
            recipient_name=email.recipient_name,
            subject=email.subject,
            body_text=email.body_text,
            body_html=email.body_html,
        ),
    )


def record_sent(session: Session, email_id: int, sent_at: datetime, channels: Channels) -> None:
    email = session.get(Email, email_id)
    if email is None or email.status is EmailStatus.SENT:
        return
    email.status = EmailStatus.SENT
    email.sent_at = sent_at
    email.error_message = None
    email.next_attempt_at = email.claimed_by = email.claim_expires_at = None
    add_event(
        session,
        channels.events,
        "communication.email_sent",
        email.therapist_id,
        {
            "email_id": email.id,
            "message_id": email.message_id,
            "sent_at": sent_at.isoformat(),
            "placement_request_ids": email.placement_request_ids,
        },
        sent_at,
    )
    _feedback(
        session,
        channels,
        email.therapist_id,
        {
            "kind": "email_sent",
            "email_key": email.email_key,
            "limited": email.counts_toward_limit,
            "sent_at": sent_at.isoformat(),
        },
        sent_at,
    )


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
    add_event(
        session,
        channels.events,
        "communication.email_failed",
        email.therapist_id,
        {
            "email_id": email.id,
            "error": email.error_message,
            "retry_count": email.retry_count,
            "will_retry": retry,
            "next_attempt_at": email.next_attempt_at.isoformat() if email.next_attempt_at else None,
        },
        now,
    )
    if not retry:
        _report_final_failure(session, email, channels, now, already_reported=True)
    return retry


def _report_final_failure(
    session: Session, email: Email, channels: Channels, now: datetime, *, already_reported: bool = False
) -> None:
    if not already_reported:
        add_event(
            session,
            channels.events,
            "communication.email_failed",
            email.therapist_id,
            {
                "email_id": email.id,
                "error": email.error_message,
                "retry_count": email.retry_count,
                "will_retry": False,
                "next_attempt_at": None,
            },
            now,
        )
    add_event(
        session,
        channels.events,
        "communication.alert",
        email.therapist_id,
        {
            "severity": "error",
            "code": "email_failed",
            "email_id": email.id,
            "message": f"email {email.id} ({email.kind}) to therapist {email.therapist_id} failed "
            f"for good after {email.retry_count} attempt(s): {email.error_message}",
        },
        now,
    )
    _abandon(session, channels, email.therapist_id, email.email_key, now)


def settle_request(session: Session, command: Mapping[str, Any], now: datetime) -> None:
    """A request already emailed changed status: record it on its batch entries."""
    session.execute(
        update(EmailBatch)
        .where(EmailBatch.placement_request_id == int(command["placement_request_id"]))
        .values(request_status=command["status"], updated_at=now)
    )
