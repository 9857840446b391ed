"""The delivery queue: claiming due emails (most urgent first, the send window
and the weekly rule checked), keeping and releasing claims."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Row, and_, func, or_, select, text, update
from sqlalchemy.orm import Session

from domain.contact_limit import Claim, ClaimCandidate, HoldBack, check_claims
from domain.send_window import SendWindow, is_open, next_open, windowed_kinds
from streams.delivery.mime import OutgoingEmail
from streams.persistence.db import one_of
from streams.persistence.models import (
    Email,
    EmailStatus,
    TherapistDirectoryEntry,
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


@dataclass(frozen=True)
class SendWindowPolicy:
    """``COMM_SEND_WINDOW`` as the delivery queue applies it: emails of ``kinds`` go
    only while ``window`` is open in their therapist's time zone (``zone`` when the
    directory has none)."""

    window: SendWindow
    zone: tzinfo
    kinds: frozenset[str]

    @classmethod
    def of(cls, window: SendWindow | None, zone: tzinfo, confirmations: bool) -> SendWindowPolicy | None:
        """The policy for the settings; None without a window (nothing is held)."""
        return None if window is None else cls(window, zone, windowed_kinds(confirmations))


def claim_due(
    session: Session,
    worker: str,
    now: datetime,
    limit: int,
    lease: timedelta,
    contact_interval: timedelta,
    *,
    window: SendWindowPolicy | None = None,
) -> list[ClaimedEmail]:
    """Claim up to ``limit`` due emails for ``worker``, most urgent first.

    Due: queued and its time has come, or "being sent" by a worker whose claim ran
    out (it died between claiming and recording): that one is sent again, with the
    same Message-ID. An email the send window holds (``window``) goes back in the
    queue until the window opens, so later polls do not look at it again. The
    weekly rule is checked once more (domain.contact_limit.check_claims); an email
    it holds back goes back in the queue. Either way the next due emails, in
    priority order, fill the claim.
    """
    if session.get_bind().dialect.name == "postgresql":
        # One claim at a time across workers: the weekly-rule check below must see
        # the other workers' claims (SQLite has one writer anyway).
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CLAIM_LOCK})
    claimed: list[ClaimedEmail] = []
    while len(claimed) < limit:
        wanted = limit - len(claimed)
        emails = _due(session, now, wanted)
        sendable = _within_window(session, emails, window, now) if window is not None else emails
        taken = _check_limit(session, sendable, worker, now, lease, contact_interval)
        claimed.extend(taken)
        # Put back nothing, or ran out of due emails: no more to find.
        if len(taken) == len(emails) or len(emails) < wanted:
            break
    return claimed


# The columns a claim needs: to check it, and to send the email (ClaimedEmail).
_CLAIM_COLUMNS = (
    Email.id,
    Email.email_key,
    Email.therapist_id,
    Email.kind,
    Email.counts_toward_limit,
    Email.placement_request_ids,
    Email.message_id,
    Email.sender_email,
    Email.sender_name,
    Email.recipient_email,
    Email.recipient_name,
    Email.subject,
    Email.body_text,
    Email.body_html,
)


def _due(session: Session, now: datetime, limit: int) -> list[Row[Any]]:
    """The most urgent due emails, as rows of _CLAIM_COLUMNS (not ORM objects: a
    claim then costs one UPDATE, not a flush of every email it holds)."""
    due = or_(
        and_(Email.status == EmailStatus.QUEUED, Email.next_attempt_at <= now),
        and_(Email.status == EmailStatus.SENDING, Email.claim_expires_at < now),
    )
    # domain.delivery_order.delivery_order, in SQL so that LIMIT takes the most urgent.
    query = (
        select(*_CLAIM_COLUMNS)
        .where(due)
        .order_by(Email.priority, Email.oldest_registered_at.asc().nulls_last(), Email.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query))


def _check_limit(
    session: Session, emails: list[Row[Any]], worker: str, now: datetime, lease: timedelta, contact_interval: timedelta
) -> list[ClaimedEmail]:
    """Claim the emails the weekly rule lets go; put the others back in the queue."""
    limited = {e.therapist_id for e in emails if e.counts_toward_limit}
    decisions = check_claims(
        (ClaimCandidate(e.id, e.therapist_id, e.counts_toward_limit) for e in emails),
        _last_limited_send(session, limited),
        _limited_being_sent(session, limited, now),
        now,
        contact_interval,
    )
    claimed: list[ClaimedEmail] = []
    held: dict[int, datetime] = {}
    for email, decision in zip(emails, decisions, strict=True):
        match decision:
            case HoldBack(until=until):
                held[email.id] = until
                log.warning(
                    "email %s to therapist %s held back until %s by the contact limit",
                    email.id,
                    email.therapist_id,
                    until.isoformat(),
                )
            case Claim():
                claimed.append(_snapshot(email))
    _requeue(session, held)
    if claimed:
        session.execute(
            update(Email)
            .where(one_of(session, Email.id, [e.id for e in claimed]))
            .values(status=EmailStatus.SENDING, claimed_by=worker, claim_expires_at=now + lease)
            .execution_options(synchronize_session=False)
        )
    return claimed


def _within_window(session: Session, emails: list[Row[Any]], policy: SendWindowPolicy, now: datetime) -> list[Row[Any]]:
    """The emails the send window lets go now; the others wait in the queue until it
    opens in their therapist's time zone (one query for those time zones)."""
    windowed = [e for e in emails if e.kind in policy.kinds]
    if not windowed:
        return emails
    zones = _zones(session, {e.therapist_id for e in windowed}, policy.zone)
    held: dict[int, datetime] = {}
    for email in windowed:
        zone = zones.get(email.therapist_id, policy.zone)
        if not is_open(policy.window, zone, now):
            held[email.id] = next_open(policy.window, zone, now)
    _requeue(session, held)
    if held:
        log.info(
            "%d emails wait for the send window (%s), the first until %s",
            len(held),
            policy.window,
            min(held.values()).isoformat(),
        )
    return [e for e in emails if e.id not in held]


def _zones(session: Session, therapist_ids: set[int], default: tzinfo) -> dict[int, tzinfo]:
    """The therapists' time zones from the directory (``default`` for a missing or
    unknown one)."""
    rows = session.execute(
        select(TherapistDirectoryEntry.therapist_id, TherapistDirectoryEntry.timezone).where(
            one_of(session, TherapistDirectoryEntry.therapist_id, list(therapist_ids)),
            TherapistDirectoryEntry.timezone.is_not(None),
        )
    )
    return {therapist_id: _zone(name, default) for therapist_id, name in rows}


@cache
def _zone(name: str, default: tzinfo) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def _requeue(session: Session, until: Mapping[int, datetime]) -> None:
    """Put emails back in the queue, each due again at its time."""
    if not until:
        return
    session.execute(  # the ORM's UPDATE by primary key, one per email
        update(Email),
        [
            {
                "id": email_id,
                "status": EmailStatus.QUEUED,
                "next_attempt_at": at,
                "claimed_by": None,
                "claim_expires_at": None,
            }
            for email_id, at in until.items()
        ],
    )


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


def _snapshot(email: Row[Any]) -> ClaimedEmail:
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
