"""Creating emails from send commands: render, store with their batch entries, and
report (``email_created``, ``email_queued``) through the outbox, in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, MANUAL
from domain.delivery_order import priority_of
from domain.placement import PlacementRequest
from domain.therapist_state import CREATE_EMAIL
from streams.delivery.mime import message_id_for
from streams.email.context import Identity, email_context, opt_out_context, recipient_name
from streams.email.html_text import html_to_text
from streams.email.rendering import RenderedEmail, RenderError
from streams.email.sanitiser import clean_html
from streams.messages.inbox import EmailFailed
from streams.messages.outputs import Alert, EmailCreated, EmailKind, EmailQueued
from streams.messages.send_commands import SendEmail
from streams.persistence import waiting_requests
from streams.persistence.db import one_of
from streams.persistence.delivery_results import failure_rows
from streams.persistence.models import (
    EMAIL_BATCHES,
    EMAILS,
    Email,
    EmailBatch,
    EmailStatus,
)
from streams.persistence.outbox import Channels, add_rows, command_rejected_row, event_row, inbox_row

log = logging.getLogger(__name__)


class Render(Protocol):
    def __call__(self, template: str, context: Mapping[str, Any], therapist_id: int | None = None) -> RenderedEmail: ...


def store_send_commands(
    session: Session,
    commands: Sequence[SendEmail],
    render: Render,
    identity: Identity,
    channels: Channels,
    now: datetime,
) -> list[int | None]:
    """Create the emails a batch of send commands describes, in one transaction and
    with one round of INSERTs; per command the new email's id, or None when there is
    nothing to create (a replayed command, or every request in it already emailed)."""
    commands = _with_patient_details(session, commands)
    keys = [c.email_key for c in commands]
    known_keys = set(session.scalars(select(Email.email_key).where(one_of(session, Email.email_key, keys))))
    emailed = _already_emailed(
        session,
        [r.placement_request_id for c in commands if c.email_kind == CONTACT_REQUEST for r in c.requests],
    )
    created: list[tuple[SendEmail, Email, RenderedEmail | None] | None] = []
    messages: list[dict[str, Any]] = []
    for command in commands:
        key = command.email_key
        if key in known_keys:
            created.append(None)
            continue
        known_keys.add(key)
        therapist_id = command.therapist_id
        requests = list(command.requests)
        if command.email_kind == CONTACT_REQUEST:
            requests = [r for r in requests if r.placement_request_id not in emailed]
            if not requests:
                log.warning("email %s: every request in it was already emailed; not created", key)
                messages.append(inbox_row(channels, EmailFailed(therapist_id, key), now))
                created.append(None)
                continue
            emailed.update(r.placement_request_id for r in requests)
        elif command.email_kind == CONFIRMATION:
            requests = [_with_known_patient(session, r) for r in requests]
        rendered: RenderedEmail | None
        if command.email_kind == MANUAL:
            outcome = _new_manual_email(session, command, render, identity, now)
            if isinstance(outcome, str):
                if command.command_id is None:  # a manual email is always some command's
                    raise ValueError(f"email {key}: a manual email without its command id")
                messages.append(
                    command_rejected_row(channels.events, command.command_id, CREATE_EMAIL, therapist_id, outcome, now)
                )
                messages.append(inbox_row(channels, EmailFailed(therapist_id, key), now))  # it held the window
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


def _with_patient_details(session: Session, commands: Sequence[SendEmail]) -> list[SendEmail]:
    """The commands with their requests' patient details joined in (one lookup for
    the whole batch): the therapist table, and so the command, carries none."""
    flat = waiting_requests.with_details(session, [r for c in commands for r in c.requests])
    filled: list[SendEmail] = []
    start = 0
    for command in commands:
        count = len(command.requests)
        filled.append(replace(command, requests=tuple(flat[start : start + count])))
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
    session: Session, command: SendEmail, render: Render, identity: Identity, now: datetime
) -> tuple[Email, RenderedEmail] | str:
    """The email of a ``create_email`` command, or why it cannot be created."""
    content = command.content
    if content is None:
        raise ValueError(f"manual email {command.email_key} without its content")
    therapist = command.therapist  # None: no directory entry, the command names the address
    requests = list(command.requests)
    for request_id in content.placement_request_ids:
        if any(r.placement_request_id == request_id for r in requests):
            continue
        known = known_request(session, request_id)
        if known is None:
            return f"placement request {request_id} is not known to the communication service"
        requests.append(known)
    if content.template:
        context = {**email_context(therapist, requests, identity), **content.context}
        try:
            rendered = render(content.template, context, command.therapist_id)
        except RenderError as exc:
            return f"template {content.template!r} cannot be used: {exc}"
    elif content.subject is not None and content.body_html is not None:
        html = clean_html(content.body_html)
        rendered = RenderedEmail(content.subject, html, content.body_text or html_to_text(html))
    else:
        raise ValueError(f"manual email {command.email_key}: neither a template nor a subject and body")
    address = content.recipient_email or (therapist.email if therapist is not None else None)
    if not address:
        raise ValueError(f"email {command.email_key}: no recipient address")
    if content.recipient_name:
        name = content.recipient_name
    elif content.recipient_email or therapist is None:
        name = ""
    else:
        name = recipient_name(therapist)
    # Counts toward the limit whenever the command said to respect it, also a draft
    # that is queued later (delivery then holds it back until the window allows).
    email = _email_row(command, address, name, requests, identity, now, limited=command.respect_contact_limit)
    _fill(email, rendered, queue=command.queue, now=now)
    return email, rendered


def known_request(session: Session, request_id: int) -> PlacementRequest | None:
    """A placement request as the last email about it described it."""
    batch = _last_batch(session, request_id)
    return None if batch is None else batch.as_request()


def _last_batch(session: Session, request_id: int) -> EmailBatch | None:
    return session.scalars(
        select(EmailBatch).where(EmailBatch.placement_request_id == request_id).order_by(EmailBatch.id.desc()).limit(1)
    ).first()


def _new_email(
    command: SendEmail,
    requests: list[PlacementRequest],
    render: Render,
    identity: Identity,
    now: datetime,
) -> tuple[Email, RenderedEmail | None]:
    """A templated email (contact request, follow-up, confirmation). A template
    that cannot be rendered fails this one email, with the reason."""
    therapist, template = command.therapist, command.template
    if therapist is None or template is None:
        raise ValueError(f"email {command.email_key}: a {command.email_kind} email needs a profile and a template")
    name = recipient_name(therapist)
    email = _email_row(command, therapist.email, name, requests, identity, now, limited=command.limited)
    try:
        context = {
            **email_context(therapist, requests, identity),
            **(command.context or {}),
            **opt_out_context(identity, command.email_kind, command.therapist_id, therapist.email),
        }
        rendered = render(template, context, email.therapist_id)
    except RenderError as exc:
        email.subject, email.body_html, email.body_text = f"({template})", "", ""
        email.status = EmailStatus.FAILED
        email.error_message = str(exc)
        return email, None
    _fill(email, rendered, queue=True, now=now)
    return email, rendered


def _email_row(
    command: SendEmail,
    address: str,
    name: str,
    requests: list[PlacementRequest],
    identity: Identity,
    now: datetime,
    *,
    limited: bool,
) -> Email:
    key = command.email_key
    kind = command.email_kind
    return Email(
        email_key=key,
        therapist_id=command.therapist_id,
        kind=kind,
        template=command.template,
        recipient_email=address,
        recipient_name=name or address,
        sender_email=identity.sender_email,
        sender_name=identity.sender_name,
        placement_request_ids=[r.placement_request_id for r in requests],
        message_id=message_id_for(key, identity.sender_email),
        priority=priority_of(kind),
        # A request without a registration time (none come from the topics) is tolerated.
        oldest_registered_at=min((r.registered_at for r in requests if r.registered_at), default=None),
        counts_toward_limit=limited,
        retry_count=0,
        response_received=False,
        created_at=now,
        updated_at=now,
        batches=[
            EmailBatch(
                placement_request_id=r.placement_request_id,
                patient_id=r.patient_id,
                position=position,
                registered_at=r.registered_at,
                patient=dict(r.patient or {}),
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
    command: SendEmail,
    email: Email,
    rendered: RenderedEmail | None,
    channels: Channels,
    now: datetime,
) -> list[dict[str, Any]]:

    causation = command.causation_id
    created = EmailCreated(
        therapist_id=email.therapist_id,
        email_id=email.id,
        kind=cast(EmailKind, email.kind),
        template=email.template,
        subject=email.subject,
        placement_request_ids=email.placement_request_ids,
        status=email.status,
    )
    rows = [event_row(channels.events, created, now, causation_id=causation)]
    if rendered is None:
        return rows + failure_rows(email, channels, now, retry=False)
    if email.status is EmailStatus.DRAFT:
        return rows
    queued = EmailQueued(therapist_id=email.therapist_id, email_id=email.id)
    rows.append(event_row(channels.events, queued, now, causation_id=causation))
    if rendered.fallback_reason is not None:
        # A broken per-therapist template must not block the email: it goes out
        # with the standard wording, and a person is told to fix the template.
        alert = Alert(
            therapist_id=email.therapist_id,
            severity="warning",
            code="template_override_broken",
            email_id=email.id,
            message=f"email {email.id}: the therapist's own template could not be used, "
            f"the standard template was: {rendered.fallback_reason}",
        )
        rows.append(event_row(channels.events, alert, now, causation_id=causation))
    return rows


def _already_emailed(session: Session, request_ids: list[int]) -> set[int]:
    """Second line of defence for "a placement request is emailed about once": the
    table recognises replays for a retention period; the database remembers forever.
    An email that failed or bounced does not count (its requests may have gone back)."""
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
                # A bounced email's requests that went back to wait may be emailed again.
                Email.bounced_at.is_(None),
            )
        )
    )


def _with_known_patient(session: Session, request: PlacementRequest) -> PlacementRequest:
    """A confirmation for a request that already left the table: take the patient
    details from the email the request went out in."""
    if request.patient:
        return request
    known = _last_batch(session, request.placement_request_id)
    if known is None:
        return request
    return replace(request, patient=dict(known.patient), registered_at=known.registered_at or request.registered_at)
