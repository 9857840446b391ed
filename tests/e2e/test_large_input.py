"""Large inputs next to normal traffic (issue 12, point 4), on the real worker: an
oversize event is dead-lettered naming its field, an oversize command is answered,
and a therapist with hundreds of waiting requests gets them all in one email."""

from __future__ import annotations

import json

from aiokafka import AIOKafkaProducer

from tests.e2e.harness import Service, plain_text
from tests.events import envelope, match_created, therapist_created

BIG = 4 * 1024 * 1024


async def publish_large(service: Service, topic: str, key: int, document: dict) -> None:
    """A producer that allows what the service must refuse (the test's own one stops at 1 MB)."""
    producer = AIOKafkaProducer(bootstrap_servers=service.broker.bootstrap, max_request_size=BIG)
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(document).encode(), key=str(key).encode())
    finally:
        await producer.stop()


async def test_oversize_events_are_dead_lettered_and_everyone_else_is_emailed(service: Service):
    await service.up()
    therapists = range(1, 21)
    await service.therapists(*(therapist_created(t) for t in therapists))
    for n in (1, 2):  # each valid, each 700 KB: together over the broker's 1 MB message limit
        huge = match_created(900 + n, 1, "2026-01-01T10:00:00+01:00", notes="Verlauf. " * 80_000)
        await publish_large(service, service.topics.matching, 900 + n, huge)
    await service.matches(*(match_created(t * 10, t, "2026-01-02T10:00:00+01:00") for t in therapists))
    for t in therapists:
        [email] = await service.mailbox.wait_for(f"therapeut{t}@praxis.example", 1)
        text = plain_text(email)
        assert f"Pat{t * 10}" in text and "Pat901" not in text and "Pat902" not in text
    dead = await service.collector.wait_for(
        lambda: len(found := service.dead_letters()) >= 2 and found, what="two dead letters"
    )
    for record in dead:
        assert "COMM_MAX_EVENT_BYTES" in record["reason"] and "payload.patient.notes" in record["reason"]
        assert record["event_type"] == "match.created"
        assert json.loads(record["value"])["payload"]["placement_request_id"] in (901, 902)  # nothing lost
        assert "Verlauf" not in record["reason"]
    assert all(w.running for w in service.workers)


async def test_an_oversize_command_is_answered_with_the_limit(service: Service):
    await service.up()
    await service.therapists(therapist_created(7))
    pasted = "<p>Befund:</p><img src='data:image/png;base64," + "A" * 1_500_000 + "'>"
    command = envelope(
        "communication.create_email",
        {"therapist_id": 7, "subject": "Befund", "body_html": pasted, "respect_contact_limit": False},
        producer="staff-tool",
    )
    await publish_large(service, service.topics.commands, 7, command)
    reason = await service.rejection(command["event_id"])
    assert "COMM_MAX_COMMAND_BYTES" in reason and "payload.body_html" in reason
    # the worker goes on: a normal command after it is carried out
    await service.command(
        "communication.create_email",
        {"therapist_id": 7, "subject": "Kurz", "body_html": "<p>Hallo</p>", "respect_contact_limit": False},
    )
    [email] = await service.mailbox.wait_for("therapeut7@praxis.example", 1)
    assert email.message["Subject"] == "Kurz"


async def test_five_hundred_waiting_requests_with_notes_go_in_one_email(service: Service):
    await service.up(COMM_SMTP_TIMEOUT="60s")
    notes = "Sucht dringend einen Platz, abends verfügbar. " * 45  # about 2 KB
    await service.matches(
        *(
            match_created(1000 + n, 30, f"2026-01-01T{n // 60 % 24:02d}:{n % 60:02d}:00+01:00", notes=notes)
            for n in range(500)
        )
    )
    # All of them wait for the therapist, who arrives after them: one batch run finds all 500.
    await service.forwarded("match_created", 500, timeout=120)
    await service.therapists(therapist_created(30))
    [email] = await service.mailbox.wait_for("therapeut30@praxis.example", 1, timeout=120)
    text = plain_text(email)
    assert all(f"Pat{1000 + n}" in text for n in range(500))
    assert text.count("Sucht dringend") >= 500 * 45
    assert service.query("SELECT count(*) FROM email_batches") == [(500,)]
    assert service.query("SELECT count(*) FROM waiting_requests") == [(0,)]  # the details moved to the email
    assert service.dead_letters() == [] and all(w.running for w in service.workers)
