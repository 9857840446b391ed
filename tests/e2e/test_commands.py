"""The command topic and the email lifecycle end to end (CONTRACT §3, §4; issue 4)."""

from __future__ import annotations

import pytest

from streams.demo.smtp_capture import Received
from tests.e2e.harness import Service, plain_text
from tests.events import match_created, match_status_changed, therapist_created

INTERVAL = 8.0
CREATE = "communication.create_email"
UPDATE = "communication.update_email"
RESPONSE = "communication.record_email_response"
BATCH = "communication.update_email_batch"


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def html_part(received: Received) -> str:
    return next(str(p.get_content()) for p in received.message.walk() if p.get_content_type() == "text/html")


async def first_contact(service: Service, therapist_id: int, *request_ids: int) -> dict:
    await service.therapists(therapist_created(therapist_id))
    for n, request_id in enumerate(request_ids):
        await service.matches(match_created(request_id, therapist_id, f"2026-01-0{n + 1}T10:00:00+01:00"))
    [sent] = await service.wait_event("communication.email_sent", therapist_id=therapist_id)
    return sent["payload"]


async def test_manual_emails_written_templated_and_drafted(service: Service):
    await service.up()
    first = await first_contact(service, 1, 11)
    [contact] = service.mailbox.to(address(1))

    # Written by staff, not held back by the weekly window: goes at once.
    await service.command(
        CREATE,
        {
            "therapist_id": 1,
            "subject": "Rückfrage zu Ihrer Praxis",
            "body_html": "<p>Sehr geehrte Frau Dr. Müller,</p><p>haben Sie <b>dienstags</b> Sprechzeiten?</p>"
            "<script>alert(1)</script>",
            "respect_contact_limit": False,
        },
    )
    _, written = await service.mailbox.wait_for(address(1), 2)
    assert written.message["Subject"] == "Rückfrage zu Ihrer Praxis"
    assert "dienstags Sprechzeiten?" in plain_text(written)  # derived from the HTML
    assert "<b>dienstags</b>" in html_part(written) and "script" not in html_part(written)
    assert written.received_at - contact.received_at < INTERVAL

    # From a template, about a request emailed before: its details come from that email.
    await service.command(
        CREATE,
        {
            "therapist_id": 1,
            "template": "confirmation",
            "placement_request_ids": [11],
            "respect_contact_limit": False,
        },
    )
    _, _, templated = await service.mailbox.wait_for(address(1), 3)
    assert "Pat11" in plain_text(templated)

    # A draft waits; once queued it respects the window of the first contact email.
    draft_command = await service.command(
        CREATE, {"therapist_id": 1, "subject": "Entwurf", "body_html": "<p>x</p>", "queue": False}
    )
    [created] = await service.wait_event("communication.email_created", therapist_id=1, subject="Entwurf")
    assert created["payload"]["status"] == "entwurf" and created["payload"]["kind"] == "manual"
    assert created["causation_id"] == draft_command
    draft_id = created["payload"]["email_id"]
    await service.command(UPDATE, {"email_id": draft_id, "subject": "Terminabsprache"}, key=1)
    await service.wait_event("communication.email_updated", email_id=draft_id)
    await service.command(UPDATE, {"email_id": draft_id, "status": "in_warteschlange"}, key=1)
    await service.wait_event("communication.email_queued", email_id=draft_id)
    [queued_sent] = await service.wait_event("communication.email_sent", email_id=draft_id, timeout=INTERVAL + 20)
    fourth = service.mailbox.to(address(1))[3]
    assert fourth.message["Subject"] == "Terminabsprache"
    assert fourth.received_at - contact.received_at >= INTERVAL
    assert queued_sent["payload"]["message_id"] == fourth.message["Message-ID"]
    assert first["placement_request_ids"] == [11]


async def test_answers_are_recorded_and_replays_change_nothing(service: Service):
    await service.up()
    sent = await first_contact(service, 2, 21, 22)
    email_id = sent["email_id"]
    response = {
        "email_id": email_id,
        "received_at": "2026-11-23T10:15:00+01:00",
        "content": "Nr. 1 gern, Nr. 2 leider nicht.",
        "responses": [
            {"placement_request_id": 21, "outcome": "accepted"},
            {"placement_request_id": 22, "outcome": "no_capacity"},
        ],
    }
    command_id = await service.command(RESPONSE, response, key=2)
    [recorded] = await service.wait_event("communication.email_response_recorded", email_id=email_id)
    assert recorded["causation_id"] == command_id
    assert recorded["payload"]["responses"] == response["responses"]
    answers = await service.wait_event("communication.placement_response", count=2, therapist_id=2)
    assert {
        (
            a["payload"]["placement_request_id"],
            a["payload"]["patient_id"],
            a["payload"]["outcome"],
            a["payload"]["channel"],
        )
        for a in answers
    } == {(21, 100021, "accepted", "email"), (22, 100022, "no_capacity", "email")}

    await service.command(RESPONSE, response, key=2, event_id=command_id)  # the same command again
    await service.command(
        BATCH,
        {
            "email_id": email_id,
            "placement_request_id": 22,
            "outcome": "needs_info",
            "notes": "fragt nach Verfügbarkeit",
        },
        key=2,
    )
    await service.wait_event("communication.placement_response", count=3, therapist_id=2)  # the later one is through
    assert len(service.events("communication.email_response_recorded", email_id=email_id)) == 1
    assert len(service.events("communication.placement_response", therapist_id=2)) == 3

    assert service.query("SELECT response_received, response_content FROM emails WHERE id = :i", i=email_id) == [
        (True, "Nr. 1 gern, Nr. 2 leider nicht.")
    ]
    assert service.query(
        "SELECT placement_request_id, response_outcome, response_notes FROM email_batches WHERE email_id = :i "
        "ORDER BY placement_request_id",
        i=email_id,
    ) == [(21, "accepted", None), (22, "needs_info", "fragt nach Verfügbarkeit")]


async def test_commands_that_cannot_be_carried_out_are_rejected_and_change_nothing(service: Service):
    await service.up()
    sent = await first_contact(service, 3, 31)
    email_id = sent["email_id"]
    await service.command(CREATE, {"therapist_id": 3, "subject": "Entwurf", "body_html": "<p>x</p>", "queue": False})
    [created] = await service.wait_event("communication.email_created", subject="Entwurf")
    draft_id = created["payload"]["email_id"]
    await service.therapists(therapist_created(4))
    await service.publisher.send(
        service.topics.therapists,
        4,
        {**therapist_created(4), "event_type": "therapist.deleted", "payload": {"therapist_id": 4}},
    )
    emails_before = service.query("SELECT count(*) FROM emails")[0][0]

    cases = {
        await service.command(UPDATE, {"email_id": 999999, "subject": "x"}, key=3): "there is no email 999999",
        await service.command(UPDATE, {"email_id": email_id, "subject": "x"}, key=3): "this email is gesendet",
        await service.command(
            UPDATE, {"email_id": draft_id, "status": "gesendet"}, key=3
        ): "status can only be set to in_warteschlange",
        await service.command(
            RESPONSE,
            {
                "email_id": email_id,
                "received_at": "2026-11-23T10:00:00Z",
                "responses": [{"placement_request_id": 99, "outcome": "accepted"}],
            },
            key=3,
        ): "is not about placement request(s) 99",
        await service.command(
            RESPONSE, {"email_id": draft_id, "received_at": "2026-11-23T10:00:00Z"}, key=3
        ): "has not been sent",
        await service.command(
            BATCH, {"email_id": email_id, "placement_request_id": 98, "outcome": "rejected"}, key=3
        ): "is not about placement request(s) 98",
        await service.command(
            CREATE, {"therapist_id": 77, "subject": "s", "body_html": "<p>x</p>"}
        ): "therapist 77 is not known here yet",
        await service.command(CREATE, {"therapist_id": 4, "subject": "s", "body_html": "<p>x</p>"}): "was deleted",
        await service.command(CREATE, {"therapist_id": 3, "template": "no_such_template"}): "cannot be used",
        await service.command(
            CREATE, {"therapist_id": 3, "template": "confirmation", "placement_request_ids": [12345]}
        ): "placement request 12345 is not known",
    }
    for command_id, fragment in cases.items():
        reason = await service.rejection(command_id)
        assert fragment in reason, (fragment, reason)
    [rejected] = service.events("communication.command_rejected", command_id=next(iter(cases)))
    assert rejected["payload"]["command_type"] == UPDATE and rejected["payload"]["therapist_id"] == 3
    # nothing changed: no email created or updated, the draft untouched
    assert service.query("SELECT count(*) FROM emails")[0][0] == emails_before
    assert service.events("communication.email_updated") == []
    assert service.query("SELECT status, subject FROM emails WHERE id = :i", i=draft_id) == [("entwurf", "Entwurf")]
    assert service.events("communication.email_created", therapist_id=77) == []

    await service.publisher.send(service.topics.commands, 3, b'{"event_type": "communication.update_email"}')
    dead = await service.collector.wait_for(lambda: service.dead_letters(), what="the malformed command in the DLQ")
    assert dead[0]["source_topic"] == service.topics.commands and "invalid envelope" in dead[0]["reason"]


async def test_confirmation_goes_at_once_inside_the_weekly_window(service: Service):
    await service.up()
    await first_contact(service, 5, 51)
    [contact] = service.mailbox.to(address(5))
    await service.matches(match_status_changed(51, 5, "accepted"))
    _, confirmation = await service.mailbox.wait_for(address(5), 2)
    assert confirmation.received_at - contact.received_at < INTERVAL
    assert "Pat51" in plain_text(confirmation)
    created = await service.wait_event("communication.email_created", count=2, therapist_id=5)
    assert [c["payload"]["kind"] for c in created] == ["contact_request", "confirmation"]
    # accepted ends the follow-up for that request
    assert service.query(
        "SELECT request_status FROM email_batches WHERE placement_request_id = 51 ORDER BY id LIMIT 1"
    ) == [("accepted",)]


@pytest.mark.parametrize("connections", ["1", "3"], ids=["one-connection", "three-connections"])
async def test_confirmations_and_manual_emails_go_first_then_the_longest_waiting(service: Service, connections: str):
    await service.up(COMM_SMTP_CONNECTIONS=connections)
    await first_contact(service, 6, 61)  # emailed before: a confirmation can follow
    service.smtp.stop()  # everything below becomes due at once
    registered = {10: "2026-03-01", 11: "2025-11-01", 12: "2026-01-15", 13: "2025-12-01"}
    for therapist_id, date in registered.items():
        await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10, therapist_id, f"{date}T10:00:00+01:00"))
    await service.matches(match_status_changed(61, 6, "accepted"))
    await service.command(
        CREATE, {"therapist_id": 6, "subject": "Dringend", "body_html": "<p>x</p>", "respect_contact_limit": False}
    )
    await service.collector.wait_for(
        lambda: len(service.events("communication.email_queued")) >= 6, what="six queued emails", timeout=30
    )
    service.smtp.restart()
    await service.smtp_distinct_messages(7, timeout=40)
    order = [r.rcpt_tos[0] for r in service.smtp.messages[1:]]
    assert set(order[:2]) == {address(6)}  # the confirmation and the manual email first
    oldest_first = [address(11), address(13), address(12), address(10)]
    if connections == "1":
        assert order[2:] == oldest_first  # oldest registration first
    else:  # the classes keep their order; within one the connections race
        assert sorted(order[2:]) == sorted(oldest_first)


async def test_failed_email_can_be_sent_again(service: Service):
    refuse = {"on": True}
    service.smtp.handler.responder = lambda r: "550 5.1.1 mailbox unavailable" if refuse["on"] else None
    await service.up()
    await service.therapists(therapist_created(8))
    await service.matches(match_created(81, 8, "2026-01-01T10:00:00+01:00"))
    [failed] = await service.wait_event("communication.email_failed", therapist_id=8)
    email_id = failed["payload"]["email_id"]
    refuse["on"] = False  # the mailbox was fixed
    await service.command(UPDATE, {"email_id": email_id, "status": "in_warteschlange"}, key=8)
    [email] = await service.mailbox.wait_for(address(8), 1)
    assert "Pat81" in plain_text(email)
    await service.wait_event("communication.email_sent", email_id=email_id)  # committed with the status
    assert service.query("SELECT status, retry_count FROM emails WHERE id = :i", i=email_id) == [("gesendet", 0)]
