"""Recording opt-in opens and clicks (streams/api/tracking.py serves them): a count
per email and per (email, link position), and the first of each published once,
through the outbox, in the same transaction.

"First" is decided by the row's insert: ``INSERT … ON CONFLICT DO NOTHING
RETURNING`` on its primary key inserts for one fetch only, however many arrive at
once (on PostgreSQL a concurrent insert of the same key waits for the other
transaction, then finds the row; SQLite has one writer at a time), and only the
fetch that inserted writes the event. Every other fetch adds one to the count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from streams.messages.outputs import EmailLinkClicked, EmailOpened
from streams.persistence.models import Email, EmailLinkClick, EmailOpen
from streams.persistence.outbox import add_rows, event_row, insert_ignoring_conflicts


@dataclass(frozen=True)
class Recorded:
    first: bool  # this fetch was the first: its event is in the outbox


@dataclass(frozen=True)
class Followed:
    url: str  # where the link leads, from the stored email
    first: bool


def record_open(session: Session, email_id: int, now: datetime, events: str) -> Recorded | None:
    """Count a fetch of the email's image; None for an email that does not exist."""
    therapist_id = session.scalar(select(Email.therapist_id).where(Email.id == email_id))
    if therapist_id is None:
        return None
    inserted = session.execute(
        insert_ignoring_conflicts(session, EmailOpen)
        .values(email_id=email_id, first_opened_at=now, last_opened_at=now, open_count=1)
        .returning(EmailOpen.email_id)
    ).first()
    if inserted is not None:
        payload = EmailOpened(therapist_id=therapist_id, email_id=email_id, first_opened_at=now, open_count=1)
        add_rows(session, [event_row(events, payload, now)])
        return Recorded(first=True)
    session.execute(
        update(EmailOpen)
        .where(EmailOpen.email_id == email_id)
        .values(open_count=EmailOpen.open_count + 1, last_opened_at=now)
    )
    return Recorded(first=False)


def follow_link(
    session: Session,
    email_id: int,
    position: int,
    now: datetime,
    events: str,
    link: Callable[[str, int], str | None],
    record: bool,
) -> Followed | None:
    """Where the link at ``position`` of the stored email leads (``link`` reads it
    from the body), counted when ``record``; None for an email that does not exist
    or has no such link."""
    found = session.execute(select(Email.therapist_id, Email.body_html).where(Email.id == email_id)).first()
    if found is None:
        return None
    therapist_id, body_html = found
    url = link(body_html, position)
    if url is None:
        return None
    if not record:
        return Followed(url, first=False)
    inserted = session.execute(
        insert_ignoring_conflicts(session, EmailLinkClick)
        .values(email_id=email_id, position=position, first_clicked_at=now, last_clicked_at=now, click_count=1)
        .returning(EmailLinkClick.position)
    ).first()
    if inserted is not None:
        payload = EmailLinkClicked(therapist_id=therapist_id, email_id=email_id, link_position=position, clicked_at=now)
        add_rows(session, [event_row(events, payload, now)])
        return Followed(url, first=True)
    session.execute(
        update(EmailLinkClick)
        .where(EmailLinkClick.email_id == email_id, EmailLinkClick.position == position)
        .values(click_count=EmailLinkClick.click_count + 1, last_clicked_at=now)
    )
    return Followed(url, first=False)


@dataclass(frozen=True)
class LinkClicks:
    link_position: int
    first_clicked_at: datetime
    click_count: int


@dataclass(frozen=True)
class Engagement:
    """What tracking recorded of one email (the read API's email detail)."""

    first_opened_at: datetime | None
    open_count: int
    clicks: tuple[LinkClicks, ...]


def engagement(session: Session, email_id: int) -> Engagement:
    opened = session.get(EmailOpen, email_id)
    clicks = session.scalars(
        select(EmailLinkClick).where(EmailLinkClick.email_id == email_id).order_by(EmailLinkClick.position)
    )
    return Engagement(
        first_opened_at=None if opened is None else opened.first_opened_at,
        open_count=0 if opened is None else opened.open_count,
        clicks=tuple(LinkClicks(c.position, c.first_clicked_at, c.click_count) for c in clicks),
    )
