"""The send window at claim time (delivery_queue.claim_due with a SendWindowPolicy),
on PostgreSQL and SQLite: an email the window holds is skipped and waits, unclaimed,
until the window opens in its therapist's time zone; the rest go in priority order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from sqlalchemy import event, select

from domain.decisions import ManualEmailContent
from domain.send_window import parse_send_window
from streams.persistence import delivery_queue
from streams.persistence.delivery_queue import SendWindowPolicy
from streams.persistence.models import Email, EmailStatus, TherapistDirectoryEntry
from tests.integration.test_persistence import WEEK, command, store

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 23 November 2026, 09:00 in Berlin (CET), 17:00 in Tokyo, 03:00 in New York.
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
OPENS_IN_BERLIN = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 CET
OPENS_IN_NEW_YORK = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 10:00 EST
WINDOW = parse_send_window("mon-fri 10:00-18:00")
# Long: an email claimed in a test stays claimed (not sent) through its later claims.
LEASE = timedelta(days=1)


def policy(confirmations: bool = False) -> SendWindowPolicy:
    window = SendWindowPolicy.of(WINDOW, BERLIN, confirmations)
    assert window is not None
    return window


def claim(database, now=NOW, limit=10, window=None, worker="w1", lease=LEASE):
    return database.transaction(partial(delivery_queue.claim_due, window=window), worker, now, limit, lease, WEEK)


def directory(database, **zones: str | None) -> None:
    """Therapists in the directory, ``t<id>=zone`` (None: no zone given)."""

    def work(session):
        for name, zone in zones.items():
            session.add(
                TherapistDirectoryEntry(therapist_id=int(name[1:]), email=f"{name}@praxis.example", timezone=zone)
            )

    database.transaction(work)


def queued(database, key):
    return database.transaction(lambda s: s.scalars(select(Email).where(Email.email_key == key)).one())


def contact(key, therapist_id, registered="2026-01-01T10:00:00+00:00"):
    return command(key, therapist_id, ((therapist_id * 10 + len(key), registered),))


def confirmation(key, therapist_id):
    return command(key, therapist_id, kind="confirmation", template="confirmation", limited=False)


def manual(key, therapist_id):
    return replace(
        command(key, therapist_id, kind="manual", template=None, limited=False),
        content=ManualEmailContent(subject="Rückfrage", body_html="<p>Frage</p>", body_text="Frage"),
        queue=True,
        respect_contact_limit=False,
    )


def test_a_contact_email_waits_unclaimed_until_the_window_opens(database):
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW)
    assert claim(database, window=policy()) == []
    waiting = queued(database, "k1")
    assert (waiting.status, waiting.next_attempt_at, waiting.claimed_by) == (EmailStatus.QUEUED, OPENS_IN_BERLIN, None)
    assert waiting.retry_count == 0  # deferring is not a failed attempt
    # not looked at again while it waits, and claimed the moment the window opens
    assert claim(database, now=OPENS_IN_BERLIN - timedelta(seconds=1), window=policy()) == []
    assert [c.email_key for c in claim(database, now=OPENS_IN_BERLIN, window=policy())] == ["k1"]


def test_an_open_window_lets_the_email_go(database):
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW)
    assert [c.email_key for c in claim(database, now=OPENS_IN_BERLIN + timedelta(hours=2), window=policy())] == ["k1"]


def test_without_a_window_nothing_waits(database):
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW)
    assert [c.email_key for c in claim(database, window=None)] == ["k1"]


def test_each_therapist_has_the_window_in_their_own_time_zone(database):
    directory(database, t1="Asia/Tokyo", t2="America/New_York", t3=None)
    for therapist_id in (1, 2, 3, 4):  # 3 has no zone, 4 is not in the directory: Berlin's
        store(database, contact(f"k{therapist_id}", therapist_id), now=NOW)
    assert [c.email_key for c in claim(database, window=policy())] == ["k1"]  # 17:00 in Tokyo
    assert queued(database, "k2").next_attempt_at == OPENS_IN_NEW_YORK
    assert queued(database, "k3").next_attempt_at == OPENS_IN_BERLIN
    assert queued(database, "k4").next_attempt_at == OPENS_IN_BERLIN
    assert [c.email_key for c in claim(database, now=OPENS_IN_BERLIN, window=policy())] == ["k3", "k4"]
    assert [c.email_key for c in claim(database, now=OPENS_IN_NEW_YORK, window=policy())] == ["k2"]


def test_confirmations_wait_only_with_the_setting_and_manual_emails_never(database):
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW)
    store(database, confirmation("c1", 1), now=NOW)
    store(database, manual("m1", 1), now=NOW)
    assert [c.email_key for c in claim(database, window=policy(confirmations=False))] == ["c1", "m1"]

    store(database, confirmation("c2", 1), now=NOW)
    store(database, manual("m2", 1), now=NOW)
    assert [c.email_key for c in claim(database, window=policy(confirmations=True))] == ["m2"]
    assert queued(database, "c2").next_attempt_at == OPENS_IN_BERLIN
    assert [c.email_key for c in claim(database, now=OPENS_IN_BERLIN, window=policy(confirmations=True))] == [
        "c2",
        "k1",
    ]


def test_the_emails_after_a_waiting_one_fill_the_claim_in_priority_order(database):
    directory(database, t1="Europe/Berlin", t2="Asia/Tokyo", t3="Asia/Tokyo")
    store(database, contact("berlin", 1, "2025-12-01T10:00:00+00:00"), now=NOW)  # waited longest: first in line
    store(database, contact("tokyo-early", 2, "2026-01-01T10:00:00+00:00"), now=NOW)
    store(database, contact("tokyo-late", 3, "2026-02-01T10:00:00+00:00"), now=NOW)
    assert [c.email_key for c in claim(database, limit=1, window=policy())] == ["tokyo-early"]
    assert queued(database, "berlin").next_attempt_at == OPENS_IN_BERLIN
    assert [c.email_key for c in claim(database, limit=1, window=policy())] == ["tokyo-late"]


def test_a_waiting_email_does_not_hold_back_another_one_for_the_same_therapist(database):
    """The window is applied before the weekly rule, so an email that waits for it
    does not count as the therapist's one email on its way out."""
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW)
    store(database, confirmation("c1", 1), now=NOW)
    assert [c.email_key for c in claim(database, window=policy())] == ["c1"]
    assert queued(database, "k1").next_attempt_at == OPENS_IN_BERLIN


def test_an_expired_claim_outside_the_window_goes_back_to_the_queue(database):
    directory(database, t1="Europe/Berlin")
    store(database, contact("k1", 1), now=NOW - timedelta(hours=1))
    # claimed at 08:00 CET, without a window, by a worker that then died
    claim(database, now=NOW - timedelta(hours=1), worker="dead", lease=timedelta(minutes=1))
    assert claim(database, now=NOW, window=policy()) == []  # the claim ran out; 09:00 CET is outside
    waiting = queued(database, "k1")
    assert (waiting.status, waiting.claimed_by, waiting.claim_expires_at) == (EmailStatus.QUEUED, None, None)
    assert waiting.next_attempt_at == OPENS_IN_BERLIN


@contextmanager
def statements(database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


def test_one_query_for_the_time_zones_and_none_without_a_window_or_windowed_email(database):
    directory(database, **{f"t{n}": "Asia/Tokyo" for n in range(1, 6)})
    for n in range(1, 6):
        store(database, manual(f"m{n}", n), now=NOW)
    with statements(database) as plain:
        assert len(claim(database, limit=2, window=None)) == 2
    with statements(database) as unwindowed:
        assert len(claim(database, limit=2, window=policy())) == 2  # manual emails: nothing to look up
    assert len(unwindowed) == len(plain)
    assert not [s for s in plain + unwindowed if "therapist_directory" in s]

    for n in range(1, 6):
        store(database, contact(f"k{n}", n), now=NOW)
    with statements(database) as windowed:
        assert len(claim(database, limit=10, window=policy())) == 6  # 1 manual left, 5 contact emails
    assert len([s for s in windowed if "therapist_directory" in s]) == 1
