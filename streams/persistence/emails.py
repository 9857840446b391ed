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

from sqlalchemy import Table, and_, case, func, insert, literal, or_, select, text, update
from sqlalchemy.orm import Session, object_session

from domain.contact_limit import next_contact_at
from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.placement import ACCEPTED, CLOSING_STATUSES
from domain.retry import backoff_delay, should_retry
from domain.therapist_state import CREATE_EMAIL
from streams.codec import dumps
from streams.email_message import OutgoingEmail, message_id_for
from streams.html_text import clean_html, html_to_text
from streams.mailer import SendError
from streams.persistence import waiting_requests
from streams.persistence.call_requests import drop_from_calls
from streams.persistence.db import one_of
from streams.persistence.models import (
    EMAIL_BATCHES,
    EMAILS,
    Email,
    EmailBatch,
    EmailStatus,
    TherapistDirectoryEntry,
    UTCDateTime,
)
from streams.persistence.outbox import add_rows, command_rejected_row, event_row, message_row
from streams.rendering import RenderedEmail, RenderError

log = logging.getLogger(__name__)

_CLAIM_LOCK = 7_215_004_313

# Lower goes first when many emails are due at once.
PRIORITY = {CONFIRMATION: 0, MANUAL: 1, FOLLOW_UP: 2, CONTACT_REQUEST: 3}


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
    # The renderer completes the context (every documented field, None if unknown).
    context = dict(request.get("patient") or {})
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


def _feedback_row(channels: Channels, therapist_id: int, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A message to the therapist agent's inbox (internal)."""
    return message_row(channels.inbox, str(therapist_id), dumps({**body, "therapist_id": therapist_id}), now)


def _abandon_row(
    channels: Channels,
    therapist_id: int,
    email_key: str,
    now: datetime,
    returned: Sequence[Mapping[str, Any]] = (),
    undeliverable: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tells the therapist agent that a decided email will not go out, so it stops
    holding the therapist's window for it; ``returned`` are requests that never
    reached the therapist and wait again for the next email; ``undeliverable``, that
    the address itself cannot be reached."""
    body: dict[str, Any] = {"kind": "email_failed", "email_key": email_key}
    if returned:
        body["returned"] = list(returned)
    if undeliverable is not None:
        body["undeliverable"] = dict(undeliverable)
    return _feedback_row(channels, therapist_id, body, now)


def _batch_as_request(batch: EmailBatch) -> dict[str, Any]:
    return {
        "placement_request_id": batch.placement_request_id,
        "patient_id": batch.patient_id,
        "registered_at": batch.registered_at.isoformat() if batch.registered_at else None,
        "patient": dict(batch.patient),
    }


def store_send_commands(
    session: Session,
    commands: Sequence[Mapping[str, Any]],
    render: Render,
    identity: Identity,
    channels: Channels,
    now: datetime,
) -> list[int | None]:
    """Create the emails a batch of send commands describes, in one transaction and
    with one round of INSERTs; per command the new email's id, or None when there is
    nothing to create (a replayed command, or every request in it already emailed)."""
    commands = _with_patient_details(session, commands)
    keys = [c["email_key"] for c in commands]
    known_keys = set(session.scalars(select(Email.email_key).where(one_of(session, Email.email_key, keys))))
    emailed = _already_emailed(
        session,
        [int(r["placement_request_id"]) for c in commands if c["email_kind"] == CONTACT_REQUEST for r in c["requests"]],
    )
    created: list[tuple[Mapping[str, Any], Email, RenderedEmail | None] | None] = []
    messages: list[dict[str, Any]] = []
    for command in commands:
        key = command["email_key"]
        if key in known_keys:
            created.append(None)
            continue
        known_keys.add(key)
        therapist_id = int(command["therapist"]["therapist_id"])
        requests = list(command["requests"])
        if command["email_kind"] == CONTACT_REQUEST:
            requests = [r for r in requests if int(r["placement_request_id"]) not in emailed]
            if not requests:
                log.warning("email %s: every request in it was already emailed; not created", key)
                messages.append(_abandon_row(channels, therapist_id, key, now))
                created.append(None)
                continue
            emailed.update(int(r["placement_request_id"]) for r in requests)
        elif command["email_kind"] == CONFIRMATION:
            requests = [_with_known_patient(session, r) for r in requests]
        rendered: RenderedEmail | None
        if command["email_kind"] == MANUAL:
            outcome = _new_manual_email(session, command, render, identity, now)
            if isinstance(outcome, str):
                messages.append(
                    command_rejected_row(
                        channels.events, command["command_id"], CREATE_EMAIL, therapist_id, outcome, now
                    )
                )
                messages.append(_abandon_row(channels, therapist_id, key, now))  # it held the window
                created.append(None)
                continue
            email, rendered = outcome
        else:
            email, rendered = _new_email(command, requests, render, identity, now)
        created.append((command, email, rendered))
    _insert_emails(session, [entry[1] for entry in created if entry is not None])
    # A request in its email no longer waits: its details now live in the batch entry.
    waiting_requests.forget(
        session,
        [
            b.placement_request_id
            for entry in created
            if entry is not None and entry[1].kind != MANUAL
            for b in entry[1].batches
        ],
    )
    for entry in created:
        if entry is not None:
            messages.extend(_created_rows(*entry, channels, now))
    add_rows(session, messages)  # and everything they report, at once
    return [None if entry is None else entry[1].id for entry in created]


def _with_patient_details(session: Session, commands: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The commands with their requests' patient details joined in (one lookup for
    the whole batch): the therapist table, and so the command, carries none."""
    flat = waiting_requests.with_details(session, [r for c in commands for r in c["requests"]])
    filled: list[Mapping[str, Any]] = []
    start = 0
    for command in commands:
        count = len(command["requests"])
        filled.append({**command, "requests": flat[start : start + count]})
        start += count
    return filled


def _insert_emails(session: Session, new: Sequence[Email]) -> None:
    """Insert new emails and their batch entries, and set their ids: two Core
    executemany INSERTs (the ORM's flush of the same rows cost more than rendering
    them). On PostgreSQL the ids are drawn from the sequence first: an INSERT …
    RETURNING of many rows is one huge statement that psycopg parses anew each time."""
    if not new:
        return
    table = EMAILS
    rows = [_column_values(email, table) for email in new]
    if session.get_bind().dialect.name == "postgresql":
        ids = sorted(session.scalars(_NEXT_EMAIL_IDS, {"n": len(new)}))
        for row, email_id in zip(rows, ids, strict=True):
            row["id"] = email_id
        session.execute(insert(table), rows)
    else:
        ids = list(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows))
    for email, email_id in zip(new, ids, strict=True):
        email.id = email_id
    batches = [batch for email in new for batch in email.batches]
    for batch in batches:
        batch.email_id = batch.email.id
    if batches:
        session.execute(insert(EMAIL_BATCHES), [_column_values(b, EMAIL_BATCHES) for b in batches])


_NEXT_EMAIL_IDS = text("SELECT nextval(pg_get_serial_sequence('emails', 'id')) FROM generate_series(1, :n)")


def _column_values(row: Any, table: Table) -> dict[str, Any]:
    """A new row's values, every column but the generated id (so that every row of
    one INSERT has the same keys); the constructors set each column that has a
    default."""
    return {column.key: getattr(row, column.key) for column in table.columns if column.key != "id"}


def _new_manual_email(
    session: Session, command: Mapping[str, Any], render: Render, identity: Identity, now: datetime
) -> tuple[Email, RenderedEmail] | str:
    """The email of a ``create_email`` command, or why it cannot be created."""
    content = command["content"]
    therapist = dict(command["therapist"])
    requests = list(command["requests"])
    for request_id in (int(r) for r in content.get("placement_request_ids") or ()):
        if any(int(r["placement_request_id"]) == request_id for r in requests):
            continue
        known = _known_request(session, request_id)
        if known is None:
            return f"placement request {request_id} is not known to the communication service"
        requests.append(known)
    if content.get("template"):
        context = {**email_context(therapist, requests, identity), **(content.get("context") or {})}
        try:
            rendered = render(content["template"], context, int(therapist["therapist_id"]))
        except RenderError as exc:
            return f"template {content['template']!r} cannot be used: {exc}"
    else:
        html = clean_html(content["body_html"])
        rendered = RenderedEmail(content["subject"], html, content.get("body_text") or html_to_text(html))
    if content.get("recipient_email"):
        therapist["email"] = content["recipient_email"]
        therapist["first_name"] = therapist["last_name"] = therapist["title"] = None
    if content.get("recipient_name"):
        therapist["first_name"], therapist["last_name"], therapist["title"] = None, content["recipient_name"], None
    # Counts toward the limit whenever the command said to respect it, also a draft
    # that is queued later (delivery then holds it back until the window allows).
    limits = {**command, "limited": command.get("respect_contact_limit", True)}
    email = _email_row(limits, therapist, requests, identity, now)
    _fill(email, rendered, queue=command.get("queue", True), now=now)
    return email, rendered


def _known_request(session: Session, request_id: int) -> dict[str, Any] | None:
    """A placement request as the last email about it described it."""
    batch = session.scalars(
        select(EmailBatch).where(EmailBatch.placement_request_id == request_id).order_by(EmailBatch.id.desc()).limit(1)
    ).first()
    if batch is None:
        return None
    return {
        "placement_request_id": request_id,
        "patient_id": batch.patient_id,
        "registered_at": batch.registered_at.isoformat() if batch.registered_at else None,
        "patient": dict(batch.patient),
    }


def _new_email(
    command: Mapping[str, Any],
    requests: list[Mapping[str, Any]],
    render: Render,
    identity: Identity,
    now: datetime,
) -> tuple[Email, RenderedEmail | None]:
    """A templated email (contact request, follow-up, confirmation). A template
    that cannot be rendered fails this one email, with the reason."""
    email = _email_row(command, command["therapist"], requests, identity, now)
    try:
        context = {**email_context(command["therapist"], requests, identity), **(command.get("context") or {})}
        rendered = render(command["template"], context, email.therapist_id)
    except RenderError as exc:
        email.subject, email.body_html, email.body_text = f"({command['template']})", "", ""
        email.status = EmailStatus.FAILED
        email.error_message = str(exc)
        return email, None
    _fill(email, rendered, queue=True, now=now)
    return email, rendered


def _email_row(
    command: Mapping[str, Any],
    therapist: Mapping[str, Any],
    requests: list[Mapping[str, Any]],
    identity: Identity,
    now: datetime,
) -> Email:
    key = command["email_key"]
    kind = command["email_kind"]
    return Email(
        email_key=key,
        therapist_id=int(therapist["therapist_id"]),
        kind=kind,
        template=command.get("template"),
        recipient_email=therapist["email"],
        recipient_name=recipient_name(therapist) or therapist["email"],
        sender_email=identity.sender_email,
        sender_name=identity.sender_name,
        placement_request_ids=[int(r["placement_request_id"]) for r in requests],
        message_id=message_id_for(key, identity.sender_email),
        priority=PRIORITY.get(kind, PRIORITY[CONTACT_REQUEST]),
        oldest_registered_at=min(
            (datetime.fromisoformat(r["registered_at"]) for r in requests if r.get("registered_at")), default=None
        ),
        counts_toward_limit=bool(command.get("limited", kind != CONFIRMATION)),
        retry_count=0,
        response_received=False,
        created_at=now,
        updated_at=now,
        batches=[
            EmailBatch(
                placement_request_id=int(r["placement_request_id"]),
                patient_id=int(r["patient_id"]),
                position=position,
                registered_at=datetime.fromisoformat(r["registered_at"]) if r.get("registered_at") else None,
                patient=dict(r.get("patient") or {}),
                created_at=now,
                updated_at=now,
            )
            for position, r in enumerate(requests)
        ],
    )


def _fill(email: Email, rendered: RenderedEmail, *, queue: bool, now: datetime) -> None:
    email.subject, email.body_html, email.body_text = rendered.subject, rendered.html, rendered.text
    if queue:
        email.status = EmailStatus.QUEUED
        email.queued_at = email.next_attempt_at = now
    else:
        email.status = EmailStatus.DRAFT


def _created_rows(
    command: Mapping[str, Any],
    email: Email,
    rendered: RenderedEmail | None,
    channels: Channels,
    now: datetime,
) -> list[dict[str, Any]]:
    causation = command.get("causation_id")
    created = {
        "email_id": email.id,
        "kind": email.kind,
        "template": email.template,
        "subject": email.subject,
        "placement_request_ids": email.placement_request_ids,
        "status": email.status.value,
    }
    rows = [
        event_row(
            channels.events, "communication.email_created", email.therapist_id, created, now, causation_id=causation
        )
    ]
    if rendered is None:
        return rows + _failure_rows(email, channels, now, retry=False)
    if email.status is EmailStatus.DRAFT:
        return rows
    rows.append(
        event_row(
            channels.events,
            "communication.email_queued",
            email.therapist_id,
            {"email_id": email.id},
            now,
            causation_id=causation,
        )
    )
    if rendered.fallback_reason is not None:
        # A broken per-therapist template must not block the email: it goes out
        # with the standard wording, and a person is told to fix the template.
        alert = {
            "severity": "warning",
            "code": "template_override_broken",
            "email_id": email.id,
            "message": f"email {email.id}: the therapist's own template could not be used, "
            f"the standard template was: {rendered.fallback_reason}",
        }
        rows.append(
            event_row(channels.events, "communication.alert", email.therapist_id, alert, now, causation_id=causation)
        )
    return rows


def _already_emailed(session: Session, request_ids: list[int]) -> set[int]:
    """Second line of defence for "a placement request is emailed about once": the
    table recognises replays for a retention period; the database remembers forever."""
    if not request_ids:
        return set()
    return set(
        session.scalars(
            select(EmailBatch.placement_request_id)
            .join(Email)
            .where(
                one_of(session, EmailBatch.placement_request_id, request_ids),
                Email.kind == CONTACT_REQUEST,
                Email.status != EmailStatus.FAILED,
            )
        )
    )


def _with_known_patient(session: Session, request: Mapping[str, Any]) -> Mapping[str, Any]:
    """A confirmation for a request that already left the table: take the patient
    details from the email the request went out in."""
    if request.get("patient"):
        return request
    known = _known_request(session, int(request["placement_request_id"]))
    if known is None:
        return request
    return {**request, "patient": known["patient"], "registered_at": known["registered_at"] or request["registered_at"]}


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
        # One claim at a time across workers: the weekly-rule check below must see
        # the other workers' claims (SQLite has one writer anyway).
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CLAIM_LOCK})
        query = query.with_for_update(skip_locked=True)
    emails = list(session.scalars(query))
    limited = {e.therapist_id for e in emails if e.counts_toward_limit}
    last_sent = _last_limited_send(session, limited)
    being_sent = _limited_being_sent(session, limited, now)
    claimed: list[ClaimedEmail] = []
    limited_in_this_claim: set[int] = set()
    for email in emails:
        if email.counts_toward_limit:
            previous = last_sent.get(email.therapist_id)
            allowed_at = next_contact_at([previous] if previous else [], contact_interval)
            if email.therapist_id in limited_in_this_claim | being_sent or (allowed_at and now < allowed_at):
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


def _limited_being_sent(session: Session, therapist_ids: set[int], now: datetime) -> set[int]:
    """Therapists with a limited email another worker is sending right now."""
    if not therapist_ids:
        return set()
    return set(
        session.scalars(
            select(Email.therapist_id).where(
                one_of(session, Email.therapist_id, list(therapist_ids)),
                Email.counts_toward_limit.is_(True),
                Email.status == EmailStatus.SENDING,
                Email.claim_expires_at >= now,
            )
        )
    )


def renew_claims(session: Session, email_ids: list[int], worker: str, now: datetime, lease: timedelta) -> set[int]:
    """Extend this worker's claims; the ids it still holds (an expired claim may have
    been taken over, and then the other worker sends that email)."""
    held = session.scalars(
        update(Email)
        .where(one_of(session, Email.id, email_ids), Email.claimed_by == worker, Email.status == EmailStatus.SENDING)
        .values(claim_expires_at=now + lease)
        .returning(Email.id)
        .execution_options(synchronize_session=False)
    )
    return set(held)


def _last_limited_send(session: Session, therapist_ids: set[int]) -> dict[int, datetime]:
    if not therapist_ids:
        return {}
    rows = session.execute(
        select(Email.therapist_id, func.max(Email.sent_at))
        .where(
            one_of(session, Email.therapist_id, list(therapist_ids)),
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


def release_claims(session: Session, email_ids: list[int], worker: str) -> None:
    """Put claimed emails that were not tried back in the queue, attempts untouched."""
    session.execute(
        update(Email)
        .where(one_of(session, Email.id, email_ids), Email.claimed_by == worker, Email.status == EmailStatus.SENDING)
        .values(status=EmailStatus.QUEUED, claimed_by=None, claim_expires_at=None)
    )


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
        payload = {
            "email_id": email_id,
            "message_id": message_id,
            "sent_at": at.isoformat(),
            "placement_request_ids": request_ids,
        }
        feedback = {
            "kind": "email_sent",
            "email_key": email_key,
            "limited": limited,
            "sent_at": at.isoformat(),
            "therapist_id": therapist_id,
        }
        messages.append(event_row(channels.events, "communication.email_sent", therapist_id, payload, at))
        messages.append(message_row(channels.inbox, str(therapist_id), dumps(feedback), at))
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
    add_rows(session, _failure_rows(email, channels, now, retry=retry, undeliverable=not retry and error.recipient))
    return retry


def _failure_rows(
    email: Email, channels: Channels, now: datetime, *, retry: bool, undeliverable: bool = False
) -> list[dict[str, Any]]:
    """``email_failed`` for an attempt; when it failed for good, also an alert and
    the news to the therapist agent (a failed email no longer holds the window).

    ``undeliverable``: the recipient's address cannot be reached; the therapist agent
    suppresses email to it and sends the waiting requests to the phone."""
    failed = {
        "email_id": email.id,
        "error": email.error_message,
        "retry_count": email.retry_count,
        "will_retry": retry,
        "next_attempt_at": email.next_attempt_at.isoformat() if retry and email.next_attempt_at else None,
    }
    rows = [event_row(channels.events, "communication.email_failed", email.therapist_id, failed, now)]
    if not retry:
        message = (
            f"email {email.id} ({email.kind}) to therapist {email.therapist_id} failed "
            f"for good after {email.retry_count} attempt(s): {email.error_message}"
        )
        if undeliverable:
            message += "; " + _undeliverable_outlook(email)
        alert = {
            "severity": "error",
            "code": "email_undeliverable" if undeliverable else "email_failed",
            "email_id": email.id,
            "message": message,
        }
        rows.append(event_row(channels.events, "communication.alert", email.therapist_id, alert, now))
        # A contact email that never arrived: its requests wait for the next one.
        returned = [_batch_as_request(b) for b in email.batches] if email.kind == CONTACT_REQUEST else []
        unreachable = (
            {"address": email.recipient_email, "reason": email.error_message, "email_id": email.id}
            if undeliverable
            else None
        )
        rows.append(_abandon_row(channels, email.therapist_id, email.email_key, now, returned, unreachable))
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
        failed = {
            "email_id": email.id,
            "error": reason,
            "retry_count": email.retry_count,
            "will_retry": False,
            "next_attempt_at": None,
        }
        rows.append(event_row(channels.events, "communication.email_failed", therapist_id, failed, now))
        rows.append(_abandon_row(channels, therapist_id, email.email_key, now))
    add_rows(session, rows)


def settle_request(session: Session, command: Mapping[str, Any], channels: Channels, now: datetime) -> None:
    """A request already emailed changed status: record it on its batch entries;
    closed or accepted, it is no longer part of a call still to be made."""
    request_id = int(command["placement_request_id"])
    status = command["status"]
    session.execute(
        update(EmailBatch)
        .where(EmailBatch.placement_request_id == request_id)
        .values(request_status=status, updated_at=now)
    )
    if status in CLOSING_STATUSES or status == ACCEPTED:
        add_rows(session, drop_from_calls(session, channels.events, [request_id], f"request {status}", now))
