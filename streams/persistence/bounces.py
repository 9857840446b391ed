"""``communication.record_bounce``: a bounce or complaint the platform's bounce
processor received after the SMTP server had accepted an email.

The email is found here (by id or by its Message-ID) and the report goes, with what
the database knows of the email, to the therapist agent, which keeps the soft-bounce
count and decides whether the address is suppressed (streams.messages.inbox
``BounceRecorded``; domain.therapist_reach). Carried out once per command id
(streams.persistence.processed_commands). The diagnostic text is not passed on: it
may contain the address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.bounces import Bounce
from domain.decisions import CONTACT_REQUEST, FOLLOW_UP
from domain.email_status import EmailStatus
from domain.follow_up import RequestInEmail, open_requests
from domain.placement import PlacementRequest
from streams.messages.commands import RecordBounce
from streams.messages.inbox import BounceRecorded
from streams.persistence.call_jobs import taken_over
from streams.persistence.models import Email
from streams.persistence.outbox import Channels, inbox_row
from streams.persistence.processed_commands import Command, Handler, Rejected

# The emails whose requests wait again (or go to a call) when a bounce stops email.
CARRY_REQUESTS = (CONTACT_REQUEST, FOLLOW_UP)


def record_bounce(session: Session, command: Command, channels: Channels, now: datetime) -> list[dict[str, Any]]:
    p = command.payload_as(RecordBounce)
    email = _bounced_email(session, p)
    if email.status is not EmailStatus.SENT or email.sent_at is None:
        raise Rejected(
            f"email {email.id} was never sent (status {email.status.value}): only an email the SMTP server "
            "accepted can bounce; a failed delivery is handled by the service itself"
        )
    bounce = Bounce(p.type, email.recipient_email, email.id, email.sent_at, _next_sent_at(session, email))
    if email.bounced_at is None:
        email.bounced_at = now
    message = BounceRecorded(command.command_id, email.therapist_id, email.email_key, bounce, _returned(session, email))
    return [inbox_row(channels, message, now)]


def _returned(session: Session, email: Email) -> tuple[PlacementRequest, ...]:
    """The requests that go back to the therapist's waiting list (or to a call) if the
    bounce stops email: those of a contact or follow-up email that are still open,
    as the follow-up sees them (not answered, closed, or already in a call: a
    complaint may come after the follow-up call was booked)."""
    if email.kind not in CARRY_REQUESTS:
        return ()
    calls = taken_over(session, email)
    requests = [
        RequestInEmail(b.placement_request_id, b.response_outcome, b.request_status, b.placement_request_id in calls)
        for b in email.batches
    ]
    if email.response_received and not any(r.response_outcome for r in requests):
        return ()  # answered as a whole
    still_open = {r.placement_request_id for r in open_requests(requests)}
    return tuple(b.as_request() for b in email.batches if b.placement_request_id in still_open)


def _bounced_email(session: Session, p: RecordBounce) -> Email:
    message_id = None if p.message_id is None else _message_id(p.message_id)
    if p.email_id is not None:
        email = session.get(Email, p.email_id)
        if email is None:
            raise Rejected(f"there is no email {p.email_id}")
        if message_id is not None and email.message_id != message_id:
            raise Rejected(f"email {p.email_id} has another Message-ID than {message_id}: which one bounced?")
        return email
    assert message_id is not None  # the model requires one of the two
    found = session.scalars(select(Email).where(Email.message_id == message_id).limit(1)).first()
    if found is None:
        raise Rejected(f"no email was sent with Message-ID {message_id}")
    return found


def _message_id(value: str) -> str:
    """As stored (``<key@domain>``), whether or not the report kept the brackets."""
    bare = value.strip().removeprefix("<").removesuffix(">")
    return f"<{bare}>"


def _next_sent_at(session: Session, email: Email) -> datetime | None:
    """The first email sent to the same address after ``email``: if it did not
    bounce, it ended a row of soft bounces (domain.bounces)."""
    assert email.sent_at is not None
    return session.scalar(
        select(func.min(Email.sent_at)).where(
            Email.therapist_id == email.therapist_id,
            Email.status == EmailStatus.SENT,
            Email.sent_at > email.sent_at,
            func.lower(Email.recipient_email) == email.recipient_email.lower(),
        )
    )


HANDLERS: dict[str, Handler] = {"communication.record_bounce": record_bounce}
