"""What the metrics read from the database (streams.persistence.backlog), on
PostgreSQL and SQLite: emails on their way out by status, how late the most
overdue one is, and the outbox not yet published."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from domain.decisions import MANUAL
from streams.delivery.mailer import SendError
from streams.persistence import backlog, delivery_queue, delivery_results, outbox
from streams.persistence.models import Email, EmailStatus, OutboxMessage
from tests.integration.test_persistence import CHANNELS, NOW, POLICY, WEEK, command, store


def test_an_empty_database_has_no_backlog(database):
    measured = database.transaction(backlog.measure, NOW)
    assert measured == backlog.Backlog(
        emails={EmailStatus.DRAFT: 0, EmailStatus.QUEUED: 0, EmailStatus.SENDING: 0},
        oldest_due=None,
        unpublished=0,
        oldest_unpublished=None,
    )


def test_emails_are_counted_by_status_and_only_a_due_one_is_late(database):
    for n in range(4):
        store(database, command(f"k{n}", therapist_id=n + 1, requests=((n + 1, "2026-01-01T10:00:00+00:00"),)))
    [claimed] = database.transaction(delivery_queue.claim_due, "w", NOW, 1, timedelta(seconds=60), WEEK)
    [retried] = database.transaction(delivery_queue.claim_due, "w", NOW, 1, timedelta(seconds=60), WEEK)
    error = SendError("450 busy", temporary=True)
    assert database.transaction(delivery_results.record_failure, retried.id, error, NOW, POLICY, CHANNELS, 0.0)

    def draft(session):
        email = session.scalars(select(Email).where(Email.id.not_in([claimed.id, retried.id]))).first()
        email.status, email.kind, email.next_attempt_at = EmailStatus.DRAFT, MANUAL, None

    database.transaction(draft)
    later = NOW + timedelta(seconds=10)  # the retry is due 15 s after NOW: not yet
    measured = database.transaction(backlog.measure, later)
    assert measured.emails == {EmailStatus.DRAFT: 1, EmailStatus.QUEUED: 2, EmailStatus.SENDING: 1}
    assert measured.oldest_due == timedelta(seconds=10)  # the one queued at NOW
    assert measured.unpublished == 4 * 2 + 1  # email_created and email_queued each, and an email_failed
    assert measured.oldest_unpublished == timedelta(seconds=10)

    database.transaction(delivery_queue.claim_due, "w", NOW, 1, timedelta(seconds=60), WEEK)
    measured = database.transaction(backlog.measure, later)
    assert measured.emails[EmailStatus.SENDING] == 2
    assert measured.oldest_due is None  # what is queued waits for its retry: not late


def test_what_the_relay_published_leaves_the_backlog(database):
    store(database, command("k1"))
    ids = database.transaction(lambda session: list(session.scalars(select(OutboxMessage.id))))
    database.transaction(outbox.mark_published, ids[:1], NOW)
    assert database.transaction(backlog.measure, NOW + timedelta(seconds=5)).unpublished == len(ids) - 1
    database.transaction(outbox.mark_published, ids, NOW)
    measured = database.transaction(backlog.measure, NOW + timedelta(seconds=5))
    assert (measured.unpublished, measured.oldest_unpublished) == (0, None)
