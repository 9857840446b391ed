"""The delivery queue: claiming due emails (most urgent first, the weekly rule
checked once more), keeping and releasing claims."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from domain.contact_limit import Claim, ClaimCandidate, HoldBack, check_claims
from streams.delivery.mime import OutgoingEmail
from streams.persistence.db import one_of
from streams.persistence.models import (
    Email,
    EmailStatus,
)

log = logging.getLogger(__name__)

_CLAIM_LOCK = 7_215_004_313


@dataclass(frozen=True)
class ClaimedEmail:
    id: int
    email_key: str
    therapist_id: int
    kind: str
    limited: bool
    placement_request_ids: tuple[int, ...]
    outgoing: OutgoingEmail


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
    same Message-ID. The weekly rule is checked once more (domain.contact_limit.
    check_claims); an email it holds back goes back in the queue.
    """
    due = or_(
        and_(Email.status == EmailStatus.QUEUED, Email.next_attempt_at <= now),
        and_(Email.status == EmailStatus.SENDING, Email.claim_expires_at < now),
    )
    # domain.delivery_order.delivery_order, in SQL so that LIMIT takes the most urgent.
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
    decisions = check_claims(
        (ClaimCandidate(e.id, e.therapist_id, e.counts_toward_limit) for e in emails),
        _last_limited_send(session, limited),
        _limited_being_sent(session, limited, now),
        now,
        contact_interval,
    )
    claimed: list[ClaimedEmail] = []
    for email, decision in zip(emails, decisions, strict=True):
        match decision:
            case HoldBack(until=until):
                email.status = EmailStatus.QUEUED
                email.next_attempt_at = until
                email.claimed_by = email.claim_expires_at = None
                log.warning(
                    "email %s to therapist %s held back until %s by the contact limit",
                    email.id,
                    email.therapist_id,
                    until.isoformat(),
                )
            case Claim():
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
