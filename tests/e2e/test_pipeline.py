"""The core promise end to end: match events in, one batched email per therapist per
interval out, on a real broker (Tansu), PostgreSQL and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json

from tests.e2e.harness import Service, plain_text
from tests.events import encode, envelope, match_created, match_status_changed, therapist_created

INTERVAL = 8.0  # COMM_CONTACT_INTERVAL in the harness


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


async def test_one_email_with_all_waiting_patients_oldest_first(service: Service):
    await service.up()
    await service.therapists(therapist_created(1))
    await service.matches(
        match_created(11, 1, "2026-03-01T10:00:00+01:00", diagnosis="F41.1"),
        match_created(12, 1, "2026-01-15T10:00:00+01:00", diagnosis="F32.1"),
        match_created(13, 1, "2026-02-01T10:00:00+01:00"),
    )
    [email] = await service.mailbox.wait_for(address(1), 1)
    text = plain_text(email)
    assert text.index("Pat12") < text.index("Pat13") < text.index("Pat11")
    assert "F32.1" in text and "Sehr geehrte Frau Dr. Müller-1" in text
    sent = await service.wait_event("communication.email_sent", therapist_id=1)
    assert sent[0]["payload"]["placement_request_ids"] == [12, 13, 11]
    assert sent[0]["payload"]["message_id"] == email.message["Message-ID"]
    created = service.events("communication.email_created", therapist_id=1)
    assert created[0]["payload"]["template"] == "batch_request"
    assert created[0]["payload"]["kind"] == "contact_request"
    assert [e["event_type"] for e in service.events(therapist_id=1)] == [
        "communication.email_created",
        "communication.email_queued",
        "communication.email_sent",
    ]
    rows = service.query("SELECT status, recipient_email FROM emails WHERE therapist_id = 1")
    assert rows == [("gesendet", address(1))]


async def test_second_email_only_after_the_interval_with_only_new_requests(service: Service):
    await service.up()
    await service.therapists(therapist_created(2))
    await service.matches(match_created(21, 2, "2026-01-01T10:00:00+01:00"))
    [first] = await service.mailbox.wait_for(address(2), 1)
    assert "Pat21" in plain_text(first)
    await service.matches(
        match_created(22, 2, "2026-02-01T10:00:00+01:00"),
        match_created(23, 2, "2026-01-20T10:00:00+01:00"),
    )
    first_email, second = await service.mailbox.wait_for(address(2), 2, timeout=INTERVAL + 20)
    assert second.received_at - first_email.received_at >= INTERVAL
    text = plain_text(second)
    assert "Pat21" not in text and text.index("Pat23") < text.index("Pat22")
    created = await service.wait_event("communication.email_created", 2, therapist_id=2, distinct=True)
    assert [e["payload"]["template"] for e in created] == ["initial_contact", "batch_request"]


async def test_cancelled_request_is_never_emailed(service: Service):
    await service.up()
    # The therapist arrives last, so no batch run can catch the request before its cancellation.
    await service.matches(
        match_created(31, 3, "2026-01-01T10:00:00+01:00"),
        match_created(32, 3, "2026-01-02T10:00:00+01:00"),
        match_status_changed(31, 3, "withdrawn"),
    )
    dropped = await service.wait_event("communication.placement_dropped", therapist_id=3)
    assert dropped[0]["payload"]["placement_request_id"] == 31
    assert dropped[0]["payload"]["reason"] == "withdrawn"
    await service.therapists(therapist_created(3))
    [email] = await service.mailbox.wait_for(address(3), 1)
    assert "Pat32" in plain_text(email) and "Pat31" not in plain_text(email)
    sent = await service.wait_event("communication.email_sent", therapist_id=3)
    assert sent[0]["payload"]["placement_request_ids"] == [32]


async def test_request_for_an_unknown_therapist_waits_for_the_therapist(service: Service):
    await service.up()
    await service.matches(match_created(41, 4, "2026-01-01T10:00:00+01:00"))
    # A known therapist matched afterwards is emailed at a batch run; by then the
    # request for the unknown therapist has been waiting through that run.
    await service.therapists(therapist_created(5))
    await service.matches(match_created(51, 5, "2026-01-01T10:00:00+01:00"))
    await service.mailbox.wait_for(address(5), 1)
    assert service.mailbox.to(address(4)) == []
    assert service.query("SELECT count(*) FROM emails WHERE therapist_id = 4") == [(0,)]
    await service.therapists(therapist_created(4))
    [email] = await service.mailbox.wait_for(address(4), 1)
    assert "Pat41" in plain_text(email)


async def test_duplicate_event_is_counted_once(service: Service):
    await service.up()
    duplicate = match_created(61, 6, "2026-01-01T10:00:00+01:00")
    same_request_new_id = match_created(61, 6, "2026-01-01T10:00:00+01:00")
    await service.matches(duplicate, duplicate, same_request_new_id, match_created(62, 6, "2026-01-05T10:00:00+01:00"))
    await service.therapists(therapist_created(6))
    [email] = await service.mailbox.wait_for(address(6), 1)
    assert plain_text(email).count("Pat61") == 1
    sent = await service.wait_event("communication.email_sent", therapist_id=6)
    assert sent[0]["payload"]["placement_request_ids"] == [61, 62]
    # and nothing more goes out for them, even after the interval
    await service.matches(match_created(63, 6, "2026-01-06T10:00:00+01:00"))
    _, second = await service.mailbox.wait_for(address(6), 2, timeout=INTERVAL + 20)
    assert "Pat61" not in plain_text(second) and "Pat63" in plain_text(second)


BAD_INPUTS = {
    "not JSON": b"{this is not json",
    "not UTF-8": b"\xff\xfe\xfa",
    "invalid envelope": encode({"event_type": "match.created", "payload": {}}),
    "payload.patient: Field required": encode(
        envelope("match.created", {"placement_request_id": 91, "therapist_id": 9, "patient_id": 1})
    ),
    "event_type: unknown event type": encode(envelope("match.exploded", {"placement_request_id": 92})),
    "payload.patient.registered_at": encode(
        envelope(
            "match.created",
            {
                "placement_request_id": 93,
                "therapist_id": 9,
                "patient_id": 1,
                "patient": {"registered_at": "letzten Dienstag"},
            },
        )
    ),
    "occurred_at": encode({**envelope("match.created", {}), "occurred_at": "2026-13-45"}),
}


async def test_bad_input_goes_to_the_dlq_and_valid_events_still_flow(service: Service):
    await service.up()
    for n, raw in enumerate(BAD_INPUTS.values()):
        await service.publisher.send(service.topics.matching, f"bad-{n}", raw)
        await service.matches(match_created(900 + n, 9, f"2026-01-0{n + 1}T10:00:00+01:00"))
    # The good ones wait for their therapist, so that one batch run finds them all
    # (a run between two of them would rightly email the first ones alone).
    await service.forwarded("match_created", len(BAD_INPUTS))
    await service.therapists(therapist_created(9))
    await service.publisher.send(service.topics.therapists, 9, therapist_created(9, email="kein-at-zeichen"))
    [email] = await service.mailbox.wait_for(address(9), 1)
    assert all(f"Pat{900 + n}" in plain_text(email) for n in range(len(BAD_INPUTS)))

    dead = await service.collector.wait_for(
        lambda: len(service.dead_letters()) >= len(BAD_INPUTS) + 1 and service.dead_letters(),
        what="every bad input in the DLQ",
    )
    by_key = {d["key"]: d for d in dead}
    for n, (fragment, raw) in enumerate(BAD_INPUTS.items()):
        record = by_key[f"bad-{n}"]
        assert fragment in record["reason"], record["reason"]
        assert record["source_topic"] == service.topics.matching
        assert isinstance(record["partition"], int) and isinstance(record["offset"], int)
        assert "received_at" in record
        if record.get("value_encoding") == "base64":
            import base64

            assert base64.b64decode(record["value"]) == raw
        else:
            assert record["value"].encode() == raw
    invalid_email = by_key["9"]
    assert "payload.email" in invalid_email["reason"]
    assert json.loads(invalid_email["value"])["payload"]["email"] == "kein-at-zeichen"
    assert invalid_email["source_topic"] == service.topics.therapists


async def test_weekly_rule_and_waiting_requests_survive_a_worker_restart(service: Service):
    worker = await service.up()
    await service.therapists(therapist_created(10))
    await service.matches(
        match_created(101, 10, "2026-01-01T10:00:00+01:00"),
        match_created(111, 11, "2026-01-01T10:00:00+01:00"),  # therapist 11 not known yet
    )
    [first] = await service.mailbox.wait_for(address(10), 1)
    await service.wait_event("communication.email_sent", therapist_id=10)
    assert worker.terminate() < 10.0  # SIGTERM stops the worker within 10 s
    await service.matches(match_created(102, 10, "2026-01-02T10:00:00+01:00"))
    await service.start_worker()  # recovers the table from its changelog
    await service.therapists(therapist_created(11))
    [waited] = await service.mailbox.wait_for(address(11), 1)  # the request waited through the restart
    assert "Pat111" in plain_text(waited)
    _, second = await service.mailbox.wait_for(address(10), 2, timeout=INTERVAL + 30)
    assert second.received_at - first.received_at >= INTERVAL
    assert "Pat101" not in plain_text(second) and "Pat102" in plain_text(second)
    assert len(service.mailbox.to(address(10))) == 2
    # The recovered send history made the decision; the database's second check
    # (which would hold back an early email) never had to step in.
    assert b"held back by the contact limit" not in service.log_path.read_bytes()
