"""The API's reads on the real databases (PostgreSQL on the running server, SQLite):
keyset pages that return every email once while others are stored, the filters,
one email or call in full, and what the database knows about one therapist."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from domain.calls import CallStatus
from domain.email_status import EmailStatus
from streams.persistence import call_reads, delivery_queue, delivery_results, email_creation, reads
from streams.persistence.db import Database
from streams.persistence.models import Email, EmailBatch, PhoneCall, PhoneCallBatch
from tests.integration.test_persistence import CHANNELS, IDENTITY, command, render

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def add_email(database: Database, created_at: datetime, **fields: Any) -> int:
    values: dict[str, Any] = {
        "therapist_id": 7,
        "kind": "contact_request",
        "template": "initial_contact",
        "subject": "Anfrage",
        "body_html": "<p>Pat</p>",
        "body_text": "Pat",
        "recipient_email": "t7@praxis.example",
        "recipient_name": "Dr. Eva Müller",
        "sender_email": "vermittlung@example.org",
        "sender_name": "Vermittlung",
        "placement_request_ids": [1],
        "message_id": "<m@example.org>",
        "status": EmailStatus.SENT,
        "created_at": created_at,
        **fields,
    }
    values.setdefault("email_key", f"key-{uuid.uuid4().hex}")

    def insert(session: Any) -> int:
        email = Email(**values)
        session.add(email)
        session.flush()
        return email.id

    return database.transaction(insert)


def every_page(database: Database, query: reads.EmailQuery, between_pages: Any = None) -> list[list[int]]:
    pages: list[list[int]] = []
    while True:
        page = database.transaction(reads.list_emails, query)
        pages.append([email.id for email in page.emails])
        if page.next_after is None:
            return pages
        if between_pages is not None:
            between_pages(len(pages))
        query = reads.EmailQuery(limit=query.limit, after=page.next_after)


def test_pages_return_every_email_once_while_new_ones_are_stored(database: Database):
    # 10 emails, some sharing a creation time (one transaction stores several at once)
    existing = [add_email(database, T0 + timedelta(minutes=n // 2)) for n in range(10)]
    arrived: list[int] = []
    behind: list[int] = []

    def store_more(pages_read: int) -> None:
        # a newer one (before every page); one with the creation time of an email
        # already read, committed late (as a slow transaction of another worker
        # would); and one older than all, which the walk has still to reach
        arrived.append(add_email(database, T0 + timedelta(hours=1, minutes=pages_read)))
        arrived.append(add_email(database, T0 + timedelta(minutes=4)))
        behind.append(add_email(database, T0 - timedelta(minutes=pages_read)))

    pages = every_page(database, reads.EmailQuery(limit=3), store_more)
    seen = [email_id for page in pages for email_id in page]
    assert len(seen) == len(set(seen)), "an email was returned twice"
    assert set(existing) <= set(seen), "an email that was there was skipped"
    assert set(behind) <= set(seen)  # reached later in the walk, once
    assert set(seen) <= set(existing) | set(arrived) | set(behind)
    assert all(len(page) <= 3 for page in pages)
    # newest first: in the order of (created_at, id), descending
    everything = database.transaction(reads.list_emails, reads.EmailQuery(limit=500)).emails
    created = {e.id: (e.created_at, e.id) for e in everything}
    assert [created[i] for i in seen] == sorted((created[i] for i in seen), reverse=True)
    # a new walk starts with the newest
    first = database.transaction(reads.list_emails, reads.EmailQuery(limit=1)).emails[0]
    assert first.created_at == T0 + timedelta(hours=1, minutes=len(pages) - 1)


def test_a_page_ends_exactly_at_the_last_email(database: Database):
    for n in range(4):
        add_email(database, T0 + timedelta(minutes=n))
    pages = every_page(database, reads.EmailQuery(limit=2))
    assert [len(p) for p in pages] == [2, 2]  # no empty third page
    assert database.transaction(reads.list_emails, reads.EmailQuery()).next_after is None


def test_email_filters(database: Database):
    a = add_email(database, T0, therapist_id=7)
    b = add_email(database, T0 + timedelta(days=1), therapist_id=8, status=EmailStatus.FAILED, kind="manual")
    c = add_email(database, T0 + timedelta(days=2), therapist_id=7, status=EmailStatus.QUEUED, kind="confirmation")

    def ids(**query: Any) -> list[int]:
        return [e.id for e in database.transaction(reads.list_emails, reads.EmailQuery(**query)).emails]

    assert ids() == [c, b, a]
    assert ids(therapist_id=7) == [c, a]
    assert ids(statuses=(EmailStatus.FAILED, EmailStatus.QUEUED)) == [c, b]
    assert ids(kinds=("manual", "contact_request")) == [b, a]
    assert ids(since=T0 + timedelta(days=1)) == [c, b]  # at or after
    assert ids(until=T0 + timedelta(days=1)) == [a]  # before
    assert ids(therapist_id=7, statuses=(EmailStatus.SENT,), kinds=("contact_request",)) == [a]


def test_one_email_in_full_as_the_sender_stored_it(database: Database):
    [email_id] = database.transaction(
        email_creation.store_send_commands,
        [command("k-full", requests=[(11, "2026-01-01T10:00:00+00:00"), (12, "2026-01-02T10:00:00+00:00")])],
        render,
        IDENTITY,
        CHANNELS,
        T0,
    )
    database.transaction(delivery_queue.claim_due, "w", T0, 10, timedelta(seconds=60), timedelta(seconds=1))
    database.transaction(delivery_results.record_sent_many, [(email_id, T0 + timedelta(seconds=3))], CHANNELS)

    def answer(session: Any) -> None:
        email = session.get(Email, email_id)
        email.response_received, email.response_content = True, "Nr. 1 gern"
        email.batches[0].response_outcome = "accepted"
        session.add(
            PhoneCall(
                call_key="c1",
                therapist_id=7,
                email_id=email_id,
                scheduled_at=T0 + timedelta(days=7),
                duration_minutes=5,
                reason="follow_up",
                created_at=T0,
            )
        )

    database.transaction(answer)
    detail = database.transaction(reads.email_detail, email_id)
    assert detail is not None
    assert (detail.status, detail.sent_at, detail.queued_at) == (EmailStatus.SENT, T0 + timedelta(seconds=3), T0)
    assert detail.body_text == "P11, P12" and detail.body_html == "<p>P11, P12</p>"
    assert detail.recipient_email == "t7@praxis.example" and detail.message_id.startswith("<")
    assert (detail.response_received, detail.response_content) == (True, "Nr. 1 gern")
    assert [(b.placement_request_id, b.patient_id, b.response_outcome) for b in detail.batches] == [
        (11, 1011, "accepted"),
        (12, 1012, None),
    ]
    assert detail.batches[0].registered_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert len(detail.phone_call_ids) == 1
    assert database.transaction(reads.email_detail, email_id + 100) is None


def add_call(database: Database, key: str, at: datetime, requests: list[int], **fields: Any) -> int:
    def insert(session: Any) -> int:
        call = PhoneCall(
            call_key=key,
            therapist_id=fields.pop("therapist_id", 7),
            scheduled_at=at,
            duration_minutes=5,
            reason="follow_up",
            created_at=T0,
            batches=[PhoneCallBatch(placement_request_id=r, patient_id=r + 1000) for r in requests],
            **fields,
        )
        session.add(call)
        session.flush()
        return call.id

    return database.transaction(insert)


def test_calls_in_time_order_within_a_window_page_by_page(database: Database):
    late = add_call(database, "late", T0 + timedelta(hours=3), [13])
    early = add_call(database, "early", T0 + timedelta(hours=1), [11, 12])
    same_time = add_call(database, "same", T0 + timedelta(hours=1), [14], status=CallStatus.CANCELLED)
    other = add_call(database, "other", T0 + timedelta(hours=2), [15], therapist_id=8)
    outside = add_call(database, "outside", T0 + timedelta(days=1), [16])

    def ids(**query: Any) -> list[int]:
        return [c.id for c in database.transaction(call_reads.list_calls, call_reads.CallQuery(**query)).phone_calls]

    assert ids() == [early, same_time, other, late, outside]
    assert ids(scheduled_from=T0, scheduled_before=T0 + timedelta(days=1)) == [early, same_time, other, late]
    assert ids(therapist_id=7, statuses=(CallStatus.SCHEDULED,)) == [early, late, outside]
    page = database.transaction(call_reads.list_calls, call_reads.CallQuery(limit=2))
    assert [c.placement_request_ids for c in page.phone_calls] == [(11, 12), (14,)]
    rest = database.transaction(call_reads.list_calls, call_reads.CallQuery(limit=10, after=page.next_after))
    assert [c.id for c in rest.phone_calls] == [other, late, outside] and rest.next_after is None


def test_one_call_with_its_requests_and_outcomes(database: Database):
    call_id = add_call(database, "c", T0, [11, 12], status=CallStatus.COMPLETED, outcome_notes="ruft zurück")

    def outcome(session: Any) -> None:
        call = session.get(PhoneCall, call_id)
        call.batches[1].outcome, call.batches[1].notes = "no_capacity", "erst ab März"

    database.transaction(outcome)
    detail = database.transaction(call_reads.call_detail, call_id)
    assert detail is not None and (detail.status, detail.outcome_notes) == (CallStatus.COMPLETED, "ruft zurück")
    assert detail.requests == (
        call_reads.CallRequest(11, 1011, None, None),
        call_reads.CallRequest(12, 1012, "no_capacity", "erst ab März"),
    )
    assert database.transaction(call_reads.call_detail, call_id + 100) is None


def test_what_the_database_knows_about_one_therapist(database: Database):
    add_email(database, T0, sent_at=T0 + timedelta(seconds=1), email_key="old")
    last = add_email(database, T0 + timedelta(days=1), sent_at=T0 + timedelta(days=1, seconds=1), email_key="last")
    # a confirmation was sent later, but does not count toward the weekly rule
    confirmation = {"kind": "confirmation", "counts_toward_limit": False, "email_key": "confirmed"}
    add_email(database, T0 + timedelta(days=2), sent_at=T0 + timedelta(days=2), **confirmation)
    queued = add_email(database, T0 + timedelta(days=3), status=EmailStatus.QUEUED, email_key="queued")
    add_email(database, T0 + timedelta(days=3), status=EmailStatus.QUEUED, therapist_id=8, email_key="theirs")
    add_email(database, T0 + timedelta(days=3), status=EmailStatus.DRAFT, email_key="draft")
    later = add_call(database, "later", T0 + timedelta(days=5), [21])
    sooner = add_call(database, "sooner", T0 + timedelta(days=4), [22, 23])
    add_call(database, "done", T0 + timedelta(days=1), [24], status=CallStatus.COMPLETED)
    records = database.transaction(call_reads.therapist_records, 7, ["last", "not-stored-yet"])
    assert records.last_contact_email is not None and records.last_contact_email.id == last
    # on their way, and those the table still holds in flight whatever their status
    assert sorted((e.email_key, e.status) for e in records.emails) == [
        ("last", EmailStatus.SENT),
        ("queued", EmailStatus.QUEUED),
    ]
    assert {e.id for e in records.emails} >= {queued}
    assert [(c.id, c.placement_request_ids) for c in records.scheduled_calls] == [(sooner, (22, 23)), (later, (21,))]
    nothing = database.transaction(call_reads.therapist_records, 9, [])
    assert nothing == call_reads.TherapistRecords(None, (), ())


def test_a_read_on_postgresql_waits_at_most_the_statement_timeout(database: Database):
    if database.dialect != "postgresql":
        return

    def timeout_seen_by_a_read(session: Any) -> str:
        reads.list_emails(session, reads.EmailQuery())
        return str(session.execute(text("SHOW statement_timeout")).scalar())

    assert database.transaction(timeout_seen_by_a_read) == "5s"
    # local to the read's transaction: the connection goes back to the pool without it
    assert database.transaction(lambda s: str(s.execute(text("SHOW statement_timeout")).scalar())) == "0"


def test_batch_entries_keep_their_order(database: Database):
    def insert(session: Any) -> int:
        email = Email(
            email_key="ordered",
            therapist_id=7,
            kind="contact_request",
            subject="s",
            body_html="h",
            body_text="t",
            recipient_email="r@example.org",
            recipient_name="r",
            sender_email="s@example.org",
            sender_name="s",
            message_id="<x@y>",
            created_at=T0,
            batches=[EmailBatch(placement_request_id=r, patient_id=r, position=p) for p, r in enumerate((30, 10, 20))],
        )
        session.add(email)
        session.flush()
        return email.id

    email_id = database.transaction(insert)
    detail = database.transaction(reads.email_detail, email_id)
    assert detail is not None and [b.placement_request_id for b in detail.batches] == [30, 10, 20]
