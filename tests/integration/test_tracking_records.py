"""Recording opens and clicks on the real databases (PostgreSQL, SQLite): the first
of each is published once through the outbox, also when many fetches arrive at
the same moment; later ones are counted; the redirect's target comes from the
stored email, and a position beyond its links finds nothing."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from streams.delivery.tracking import Tokens, Tracking
from streams.persistence import reads
from streams.persistence.db import Database
from streams.persistence.models import EmailLinkClick, EmailOpen, OutboxMessage
from streams.persistence.tracking import follow_link, record_open
from tests.integration.test_reads import add_email

EVENTS = "communication-events"
T0 = datetime(2026, 11, 23, 9, tzinfo=UTC)
TRACKING = Tracking("https://mail.example.org", Tokens(b"k" * 32), opens=True, clicks=True)
BODY = (
    '<p><a href="https://a.example/eins">1</a> <a href="mailto:x@example.org">m</a> '
    '<a href="https://b.example/zwei?x=1">2</a></p>'
)


def events(database: Database, event_type: str) -> list[dict[str, Any]]:
    def read(session: Any) -> list[str]:
        return list(session.scalars(select(OutboxMessage.value).where(OutboxMessage.topic == EVENTS)))

    found = [json.loads(value) for value in database.transaction(read)]
    return [event for event in found if event["event_type"] == event_type]


def all_at_once(count: int, work: Any) -> list[Any]:
    """``work()`` in ``count`` threads that start together; their results."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(n: int) -> None:
        start.wait()
        results[n] = work()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_the_first_open_is_published_once_and_every_open_is_counted(database: Database):
    email_id = add_email(database, T0, therapist_id=7)
    first = database.transaction(record_open, email_id, T0, EVENTS)
    later = database.transaction(record_open, email_id, T0 + timedelta(hours=1), EVENTS)
    assert first is not None and first.first and later is not None and not later.first
    [opened] = events(database, "communication.email_opened")
    assert opened["payload"] == {
        "therapist_id": 7,
        "email_id": email_id,
        "first_opened_at": T0.isoformat(),
        "open_count": 1,
    }
    row = database.transaction(lambda s: s.get(EmailOpen, email_id))
    assert (row.open_count, row.first_opened_at, row.last_opened_at) == (2, T0, T0 + timedelta(hours=1))
    assert database.transaction(record_open, email_id + 1000, T0, EVENTS) is None


def test_opens_at_the_same_moment_publish_once(database: Database):
    email_id = add_email(database, T0)
    results = all_at_once(8, lambda: database.transaction(record_open, email_id, T0, EVENTS))
    assert sorted(r.first for r in results) == [False] * 7 + [True]
    assert len(events(database, "communication.email_opened")) == 1
    assert database.transaction(lambda s: s.get(EmailOpen, email_id).open_count) == 8


def test_a_click_leads_to_the_stored_link_and_its_first_is_published_once(database: Database):
    email_id = add_email(database, T0, body_html=BODY)

    def follow(position: int, record: bool = True) -> Any:
        return database.transaction(follow_link, email_id, position, T0, EVENTS, TRACKING.link, record)

    results = all_at_once(6, lambda: follow(2))
    assert {r.url for r in results} == {"https://b.example/zwei?x=1"}
    assert sum(r.first for r in results) == 1
    assert follow(1).url == "https://a.example/eins" and follow(1).first is False
    assert follow(3) is None  # two links only (mailto: is not one)
    assert database.transaction(follow_link, email_id + 1000, 1, T0, EVENTS, TRACKING.link, True) is None
    clicked = events(database, "communication.email_link_clicked")
    assert sorted((e["payload"]["link_position"], e["payload"]["email_id"]) for e in clicked) == [
        (1, email_id),
        (2, email_id),
    ]
    assert all(set(e["payload"]) == {"therapist_id", "email_id", "link_position", "clicked_at"} for e in clicked)

    counts = database.transaction(
        lambda s: [(c.position, c.click_count) for c in s.scalars(select(EmailLinkClick).order_by("position"))]
    )
    assert counts == [(1, 2), (2, 6)]

    # Tracking switched off: the link still leads there, nothing is counted.
    assert follow(1, record=False).url == "https://a.example/eins"
    assert database.transaction(lambda s: s.get(EmailLinkClick, (email_id, 1)).click_count) == 2


def test_the_email_detail_shows_the_counts(database: Database):
    email_id = add_email(database, T0, body_html=BODY)
    untouched = database.transaction(reads.email_detail, email_id)
    assert (untouched.tracking.first_opened_at, untouched.tracking.open_count, untouched.tracking.clicks) == (
        None,
        0,
        (),
    )
    for _ in range(3):
        database.transaction(record_open, email_id, T0, EVENTS)
    database.transaction(follow_link, email_id, 2, T0 + timedelta(minutes=1), EVENTS, TRACKING.link, True)
    detail = database.transaction(reads.email_detail, email_id).tracking
    assert (detail.first_opened_at, detail.open_count) == (T0, 3)
    assert [(c.link_position, c.first_clicked_at, c.click_count) for c in detail.clicks] == [
        (2, T0 + timedelta(minutes=1), 1)
    ]
