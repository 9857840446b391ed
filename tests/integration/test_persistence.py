"""Units of work on the real databases (PostgreSQL on the running server, SQLite)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from domain.decisions import ManualEmailContent
from domain.delivery_order import delivery_order
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.delivery.mailer import SendError
from streams.email import context
from streams.email.rendering import RenderedEmail, RenderError
from streams.messages.send_commands import SendEmail
from streams.persistence import delivery_queue, delivery_results, email_creation, outbox
from streams.persistence.models import Email, EmailBatch, EmailStatus, OutboxMessage

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
CHANNELS = outbox.Channels(events="communication-events", inbox="inbox")
IDENTITY = context.Identity("vermittlung@therapieplatz.example", "Therapieplatz-Vermittlung")
POLICY = delivery_results.RetryPolicy(max_attempts=3, base=timedelta(seconds=30), cap=timedelta(hours=1))


def render(template, context, therapist_id=None):
    return RenderedEmail(
        subject=f"{template} ({len(context['patients'])})",
        html="<p>" + ", ".join(p["first_name"] or "?" for p in context["patients"]) + "</p>",
        text=", ".join(p["first_name"] or "?" for p in context["patients"]),
    )


def command(
    key,
    therapist_id=7,
    requests=((1, "2026-01-01T10:00:00+00:00"),),
    kind="contact_request",
    template="batch_request",
    limited=True,
):
    return SendEmail(
        email_key=key,
        email_kind=kind,
        therapist_id=therapist_id,
        therapist=TherapistProfile(
            therapist_id, f"t{therapist_id}@praxis.example", "Eva", "Müller", title="Dr.", salutation="Frau"
        ),
        requests=tuple(
            # registered_at None: a request without one is tolerated (none comes from the topics)
            PlacementRequest(
                rid,
                rid + 1000,
                None if reg is None else datetime.fromisoformat(reg),
                {"first_name": f"P{rid}", "diagnosis": "F32.1"},
            )
            for rid, reg in requests
        ),
        decided_at=NOW,
        limited=limited,
        template=template,
    )


def store(database, cmd, now=NOW, renderer=render):
    return database.transaction(email_creation.store_send_commands, [cmd], renderer, IDENTITY, CHANNELS, now)[0]


def published(database, topic=None):
    def work(session):
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [(r.topic, json.loads(r.value)) for r in rows if topic is None or r.topic == topic]

    return database.transaction(work)


def event_types(database):
    return [doc["event_type"] for topic, doc in published(database, CHANNELS.events)]


def test_send_command_is_stored_once(database):
    cmd = command("k1", requests=((1, "2026-02-01T10:00:00+00:00"), (2, "2026-01-01T10:00:00+00:00")))
    email_id = store(database, cmd)
    assert email_id is not None
    assert store(database, cmd) is None  # replayed command: no second email

    def check(session):
        email = session.get(Email, email_id)
        assert email.status is EmailStatus.QUEUED
        assert email.subject == "batch_request (2)"
        assert email.placement_request_ids == [1, 2]
        assert email.message_id == "<k1@therapieplatz.example>"
        assert email.oldest_registered_at == datetime(2026, 1, 1, 10, tzinfo=UTC)
        assert [b.placement_request_id for b in email.batches] == [1, 2]
        assert email.batches[0].patient == {"first_name": "P1", "diagnosis": "F32.1"}
        assert session.scalar(select(func.count()).select_from(Email)) == 1

    database.transaction(check)
    assert event_types(database) == ["communication.email_created", "communication.email_queued"]
    created = published(database, CHANNELS.events)[0][1]
    assert created["payload"] == {
        "therapist_id": 7,
        "email_id": email_id,
        "kind": "contact_request",
        "template": "batch_request",
        "subject": "batch_request (2)",
        "placement_request_ids": [1, 2],
        "status": "in_warteschlange",
    }
    assert created["producer"] == "communication-service"


def test_a_run_of_commands_is_stored_in_order_with_one_insert_each(database):
    commands = [
        command(f"k{n}", therapist_id=n, requests=((10 * n, "2026-01-01T10:00:00+00:00"), (10 * n + 1, None)))
        for n in range(1, 6)
    ]
    commands.insert(3, commands[1])  # a replay inside the run
    ids = database.transaction(email_creation.store_send_commands, commands, render, IDENTITY, CHANNELS, NOW)
    assert ids[3] is None
    created = [i for i in ids if i is not None]
    assert created == sorted(created) and len(set(created)) == 5, "ids follow the order of the commands"

    def check(session):
        for email_id, n in zip(created, range(1, 6), strict=True):
            email = session.get(Email, email_id)
            assert (email.email_key, email.therapist_id, email.status) == (f"k{n}", n, EmailStatus.QUEUED)
            assert [(b.placement_request_id, b.position) for b in email.batches] == [(10 * n, 0), (10 * n + 1, 1)]
            assert email.batches[1].registered_at is None and email.batches[0].created_at == NOW
            assert email.claimed_by is None and email.follow_up_done_at is None and email.retry_count == 0

    database.transaction(check)
    reported = [doc["payload"] for _, doc in published(database, CHANNELS.events)]
    assert [p["email_id"] for p in reported] == [i for i in created for _ in (0, 1)]


def test_a_request_already_in_a_contact_email_is_never_emailed_again(database):
    store(database, command("k1", requests=((1, "2026-01-01T10:00:00+00:00"),)))
    again = command("k2", requests=((1, "2026-01-01T10:00:00+00:00"), (2, "2026-01-02T10:00:00+00:00")))
    email_id = store(database, again)
    assert database.transaction(lambda s: s.get(Email, email_id).placement_request_ids) == [2]
    # nothing left: no email, and the therapist agent is told so (it stops holding the window)
    assert store(database, command("k3", requests=((2, "2026-01-02T10:00:00+00:00"),))) is None
    feedback = [doc for topic, doc in published(database, "inbox")]
    assert feedback == [{"kind": "email_failed", "email_key": "k3", "therapist_id": 7}]


def test_confirmation_takes_patient_details_from_the_earlier_email(database):
    store(database, command("k1", requests=((1, "2026-01-01T10:00:00+00:00"),)))
    confirmation = command("c1", kind="confirmation", template="confirmation", limited=False)
    confirmation = replace(confirmation, requests=tuple(replace(r, patient={}) for r in confirmation.requests))
    email_id = store(database, confirmation)
    batch = database.transaction(lambda s: s.scalars(select(EmailBatch).where(EmailBatch.email_id == email_id)).one())
    assert batch.patient == {"first_name": "P1", "diagnosis": "F32.1"}


def test_template_error_fails_only_that_email(database):
    def broken(template, context, therapist_id=None):
        raise RenderError("template 'batch_request': UndefinedError: 'x' is undefined")

    email_id = store(database, command("k1"), renderer=broken)
    email = database.transaction(lambda s: s.get(Email, email_id))
    assert email.status is EmailStatus.FAILED
    assert "UndefinedError" in email.error_message
    assert event_types(database) == ["communication.email_created", "communication.email_failed", "communication.alert"]
    assert [doc["kind"] for _, doc in published(database, "inbox")] == ["email_failed"]


def test_broken_therapist_template_raises_an_alert_but_the_email_goes_out(database):
    def falling_back(template, context, therapist_id=None):
        assert therapist_id == 7
        return RenderedEmail(
            "Anfrage", "<p>x</p>", "x", fallback_reason="therapists/7/batch_request.html line 3: TemplateSyntaxError"
        )

    email_id = store(database, command("k1"), renderer=falling_back)
    assert database.transaction(lambda s: s.get(Email, email_id)).status is EmailStatus.QUEUED
    assert event_types(database) == ["communication.email_created", "communication.email_queued", "communication.alert"]
    alert = published(database, CHANNELS.events)[-1][1]["payload"]
    assert (alert["severity"], alert["code"]) == ("warning", "template_override_broken")
    assert "therapists/7/batch_request.html" in alert["message"]


def claim(database, now=NOW, worker="w1", limit=10):
    return database.transaction(delivery_queue.claim_due, worker, now, limit, timedelta(seconds=60), WEEK)


def test_claims_go_by_priority_then_longest_waiting(database):
    store(database, command("late", therapist_id=1, requests=((1, "2026-03-01T10:00:00+00:00"),)))
    store(database, command("early", therapist_id=2, requests=((2, "2026-01-01T10:00:00+00:00"),)))
    store(database, command("conf", therapist_id=3, kind="confirmation", template="confirmation", limited=False))
    assert [c.email_key for c in claim(database)] == ["conf", "early", "late"]
    assert claim(database, worker="w2") == []  # claimed ones are not handed out twice


def test_the_claim_order_is_the_domains_delivery_order(database):
    """The SQL ORDER BY of claim_due and domain.delivery_order state one rule."""
    table = [  # key, kind, template, registered
        ("c-late", "contact_request", "batch_request", "2026-03-01T10:00:00+00:00"),
        ("f-mid", "follow_up", "follow_up", "2026-02-01T10:00:00+00:00"),
        ("c-early", "contact_request", "batch_request", "2026-01-01T10:00:00+00:00"),
        ("conf-late", "confirmation", "confirmation", "2026-02-15T10:00:00+00:00"),
        ("c-tie-1", "contact_request", "batch_request", "2026-01-15T10:00:00+00:00"),
        ("conf-early", "confirmation", "confirmation", "2026-01-05T10:00:00+00:00"),
        ("c-tie-2", "contact_request", "batch_request", "2026-01-15T10:00:00+00:00"),
        ("f-early", "follow_up", "follow_up", "2025-12-01T10:00:00+00:00"),
    ]
    for therapist_id, (key, kind, template, registered) in enumerate(table, start=1):
        limited = kind != "confirmation"
        requests = ((therapist_id, registered),)
        store(database, command(key, therapist_id, requests, kind=kind, template=template, limited=limited))
    rows = database.transaction(
        lambda s: [(e.email_key, e.priority, e.oldest_registered_at, e.id) for e in s.scalars(select(Email))]
    )
    expected = [key for key, *order in sorted(rows, key=lambda r: delivery_order(r[1], r[2], r[3]))]
    assert [c.email_key for c in claim(database, limit=20)] == expected
    assert expected[:2] == ["conf-early", "conf-late"] and expected[-1] == "c-late"


def test_expired_claim_is_taken_over_with_the_same_message_id(database):
    store(database, command("k1"))
    first = claim(database)
    again = claim(database, now=NOW + timedelta(seconds=61), worker="w2")
    assert [c.id for c in again] == [first[0].id]
    assert again[0].outgoing.message_id == first[0].outgoing.message_id


def test_weekly_rule_is_checked_again_against_what_was_sent(database):
    store(database, command("k1", requests=((1, "2026-01-01T10:00:00+00:00"),)))
    sent = claim(database)[0]
    database.transaction(delivery_results.record_sent_many, [(sent.id, NOW)], CHANNELS)
    store(database, command("k2", requests=((2, "2026-01-02T10:00:00+00:00"),)), now=NOW + timedelta(days=1))
    assert claim(database, now=NOW + timedelta(days=1)) == []
    held = database.transaction(lambda s: s.scalars(select(Email).where(Email.email_key == "k2")).one())
    assert held.status is EmailStatus.QUEUED and held.next_attempt_at == NOW + WEEK
    assert [c.email_key for c in claim(database, now=NOW + WEEK)] == ["k2"]


def test_two_limited_emails_for_one_therapist_never_leave_together(database):
    store(database, command("k1", requests=((1, "2026-01-01T10:00:00+00:00"),)))
    store(database, command("k2", requests=((2, "2026-01-02T10:00:00+00:00"),)))
    assert [c.email_key for c in claim(database)] == ["k1"]


def test_unlimited_emails_ignore_the_weekly_rule(database):
    store(database, command("k1"))
    database.transaction(delivery_results.record_sent_many, [(claim(database)[0].id, NOW)], CHANNELS)
    store(database, command("c1", kind="confirmation", template="confirmation", limited=False))
    assert [c.email_key for c in claim(database, now=NOW + timedelta(minutes=1))] == ["c1"]


def test_sent_is_recorded_once_with_its_events(database):
    email_id = store(database, command("k1"))
    claim(database)
    database.transaction(delivery_results.record_sent_many, [(email_id, NOW)], CHANNELS)
    database.transaction(delivery_results.record_sent_many, [(email_id, NOW + timedelta(seconds=5))], CHANNELS)
    email = database.transaction(lambda s: s.get(Email, email_id))
    assert (email.status, email.sent_at, email.claimed_by) == (EmailStatus.SENT, NOW, None)
    sent_events = [
        doc for _, doc in published(database, CHANNELS.events) if doc["event_type"] == "communication.email_sent"
    ]
    assert len(sent_events) == 1
    assert sent_events[0]["payload"]["message_id"] == "<k1@therapieplatz.example>"
    assert [doc["kind"] for _, doc in published(database, "inbox")] == ["email_sent"]


def test_temporary_failures_retry_with_backoff_then_fail_for_good(database):
    email_id = store(database, command("k1"))
    now = NOW
    for attempt in (1, 2):
        claimed = claim(database, now=now)
        assert [c.id for c in claimed] == [email_id]
        retry = database.transaction(
            delivery_results.record_failure,
            email_id,
            SendError("451 try later", temporary=True, code=451),
            now,
            POLICY,
            CHANNELS,
            0.0,
        )
        assert retry
        email = database.transaction(lambda s: s.get(Email, email_id))
        # jitter 0.0: half of base * 2^(attempt-1)
        assert email.next_attempt_at == now + timedelta(seconds=15 * 2 ** (attempt - 1))
        assert claim(database, now=now) == []  # not before its time
        now = email.next_attempt_at
    claim(database, now=now)
    assert not database.transaction(
        delivery_results.record_failure,
        email_id,
        SendError("451 try later", temporary=True),
        now,
        POLICY,
        CHANNELS,
        0.5,
    )
    email = database.transaction(lambda s: s.get(Email, email_id))
    assert (email.status, email.retry_count, email.error_message) == (EmailStatus.FAILED, 3, "451 try later")
    failures = [
        doc["payload"]
        for _, doc in published(database, CHANNELS.events)
        if doc["event_type"] == "communication.email_failed"
    ]
    assert [(f["retry_count"], f["will_retry"]) for f in failures] == [(1, True), (2, True), (3, False)]
    assert failures[-1]["next_attempt_at"] is None
    assert event_types(database)[-1] == "communication.alert"


def test_permanent_failure_stops_at_once(database):
    email_id = store(database, command("k1"))
    claim(database)
    assert not database.transaction(
        delivery_results.record_failure,
        email_id,
        SendError("550 no such user", temporary=False, code=550),
        NOW,
        POLICY,
        CHANNELS,
        0.0,
    )
    email = database.transaction(lambda s: s.get(Email, email_id))
    assert (email.status, email.retry_count) == (EmailStatus.FAILED, 1)


def test_outbox_is_read_in_order_and_marked(database):
    def write(session):
        for n in range(5):
            outbox.add_rows(session, [outbox.message_row("t", str(n), f'{{"n": {n}}}', NOW)])

    database.transaction(write)
    batch = database.transaction(outbox.unpublished, 3)
    assert [m.key for m in batch] == ["0", "1", "2"]
    database.transaction(outbox.mark_published, [m.id for m in batch], NOW)
    assert [m.key for m in database.transaction(outbox.unpublished, 10)] == ["3", "4"]


def test_lease_belongs_to_one_holder_until_it_expires(database):
    lease = timedelta(seconds=30)
    assert database.transaction(outbox.acquire_lease, "relay", "a", NOW, lease)
    assert not database.transaction(outbox.acquire_lease, "relay", "b", NOW + timedelta(seconds=10), lease)
    assert database.transaction(outbox.acquire_lease, "relay", "a", NOW + timedelta(seconds=10), lease)
    assert database.transaction(outbox.acquire_lease, "relay", "b", NOW + timedelta(seconds=41), lease)
    database.transaction(outbox.release_lease, "relay", "b")
    assert database.transaction(outbox.acquire_lease, "relay", "a", NOW + timedelta(seconds=42), lease)


def test_concurrent_claims_are_disjoint(database):
    for n in range(40):
        store(database, command(f"k{n}", therapist_id=n + 1, requests=((n + 1, "2026-01-01T10:00:00+00:00"),)))
    results: dict[str, list[int]] = {}
    start = threading.Barrier(4)

    def worker(name):
        start.wait()
        ids = []
        while batch := claim(database, worker=name, limit=3):
            ids.extend(c.id for c in batch)
        results[name] = ids

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for ids in results.values() for i in ids]
    assert len(everything) == 40 == len(set(everything))


@pytest.mark.parametrize("status", ["bogus", "sent"])
def test_status_values_are_constrained(database, status):
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError, StatementError

    email_id = store(database, command("k1"))
    with pytest.raises((IntegrityError, StatementError)):
        database.transaction(
            lambda s: s.execute(text("UPDATE emails SET status = :s WHERE id = :i"), {"s": status, "i": email_id})
        )


def test_rejected_manual_email_releases_the_window_it_held(database):
    manual = replace(
        command("m1", kind="manual", template=None),
        content=ManualEmailContent(template="no_such_template"),
        command_id="c-1",
        queue=True,
        limited=True,
        respect_contact_limit=True,
    )

    def renderer(template, context, therapist_id=None):
        raise RenderError(f"template {template!r}: TemplateNotFound")

    assert store(database, manual, renderer=renderer) is None
    rejected = [doc for _, doc in published(database, CHANNELS.events)]
    assert [d["event_type"] for d in rejected] == ["communication.command_rejected"]
    assert [doc for _, doc in published(database, "inbox")] == [
        {"kind": "email_failed", "email_key": "m1", "therapist_id": 7}
    ]


def test_two_claims_never_hand_out_two_limited_emails_for_one_therapist(database):
    store(database, command("k1", requests=((1, "2026-01-01T10:00:00+00:00"),)))
    store(database, command("k2", kind="follow_up", template="follow_up", requests=((2, "2026-01-02T10:00:00+00:00"),)))
    assert [c.email_key for c in claim(database, worker="a", limit=1)] == ["k2"]  # follow-ups go first
    assert claim(database, worker="b") == []  # k2 is being sent by worker a: k1 must wait
    held = database.transaction(lambda s: s.scalars(select(Email).where(Email.email_key == "k1")).one())
    assert held.status is EmailStatus.QUEUED and held.next_attempt_at > NOW


def test_a_claim_taken_over_is_no_longer_held(database):
    email_id = store(database, command("k1"))
    claim(database, worker="a")
    lease = timedelta(seconds=60)
    assert database.transaction(delivery_queue.renew_claims, [email_id], "a", NOW + timedelta(seconds=30), lease) == {
        email_id
    }
    claim(database, worker="b", now=NOW + timedelta(seconds=91))  # a's claim ran out, b took over
    assert (
        database.transaction(delivery_queue.renew_claims, [email_id], "a", NOW + timedelta(seconds=92), lease) == set()
    )


def test_a_deleted_therapist_gets_none_of_the_emails_still_waiting(database):
    store(database, command("k1"))
    store(database, command("c1", kind="confirmation", template="confirmation", limited=False))
    database.transaction(delivery_results.fail_unsent, 7, "therapist deleted: no further contact", CHANNELS, NOW)
    statuses = database.transaction(lambda s: [(e.status, e.error_message) for e in s.scalars(select(Email))])
    assert statuses == [(EmailStatus.FAILED, "therapist deleted: no further contact")] * 2
    assert claim(database) == []
    assert event_types(database).count("communication.email_failed") == 2
