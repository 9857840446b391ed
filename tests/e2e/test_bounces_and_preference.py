"""Bounces after acceptance and the phone-only contact preference (issue 17, points 1
and 2's therapist side) on the real worker, Tansu, PostgreSQL and aiosmtpd: a hard
bounce suppresses the address and the requests go to a call (once, also when the
email's follow-up comes due); soft bounces suppress at the limit in a row; phone-only
therapists get calls and no contact emails; every command once."""

from __future__ import annotations

from typing import Any

from tests.e2e.harness import Service, plain_text
from tests.e2e.test_suppression import ALWAYS, address, batch_runs_pass
from tests.events import match_created, therapist_created
from tests.waiting import until

BOUNCE = "communication.record_bounce"
PREFERENCE = "communication.set_contact_preference"
# Long enough that a bounce is handled well before the email's follow-up is due.
FOLLOW_UP = {"COMM_FOLLOW_UP_AFTER": "12s", "COMM_CALL_MIN_NOTICE": "0s"}


async def manual_email(service: Service, therapist_id: int, count: int) -> dict[str, Any]:
    """A manual email sent at once (outside the weekly rule); the ``count``-th email_sent."""
    payload = {
        "therapist_id": therapist_id,
        "subject": "Rückfrage",
        "body_html": "<p>Guten Tag</p>",
        "respect_contact_limit": False,
    }
    await service.command("communication.create_email", payload)
    sent = await service.wait_event("communication.email_sent", count=count, distinct=True, therapist_id=therapist_id)
    return sent[-1]


async def test_a_hard_bounce_suppresses_the_address_and_books_one_call(make_service):
    async with make_service(**FOLLOW_UP) as service:
        await service.up()
        await service.therapists(therapist_created(1, availability=ALWAYS), therapist_created(2))
        await service.known_for_calls(1)
        await service.matches(
            match_created(11, 1, "2026-01-02T10:00:00+01:00"), match_created(12, 1, "2026-01-01T10:00:00+01:00")
        )
        [sent] = await service.wait_event("communication.email_sent", therapist_id=1)
        email_id, message_id = sent["payload"]["email_id"], sent["payload"]["message_id"]

        unknown = await service.command(BOUNCE, {"message_id": "<nie@gesendet.example>", "type": "hard"}, key=1)
        assert "no email was sent with Message-ID <nie@gesendet.example>" in await service.rejection(unknown)

        payload = {"message_id": message_id, "type": "hard", "diagnostic": "550 5.1.1 user unknown"}
        command_id = await service.command(BOUNCE, payload, key=1)
        [recorded] = await service.wait_event("communication.bounce_recorded", therapist_id=1)
        assert recorded["payload"] == {
            "therapist_id": 1,
            "email_id": email_id,
            "type": "hard",
            "soft_bounce_count": 0,
            "suppressed": True,
        }
        assert recorded["causation_id"] == command_id
        [suppressed] = await service.wait_event("communication.email_suppressed", therapist_id=1)
        assert suppressed["payload"]["email_id"] == email_id
        assert "user unknown" not in str(suppressed) and "@" not in str(suppressed["payload"])  # no diagnostic
        [call] = await service.wait_event("communication.phone_call_scheduled", therapist_id=1)
        assert call["payload"]["reason"] == "undeliverable" and call["payload"]["placement_request_ids"] == [12, 11]

        # The same command again changes nothing.
        await service.command(BOUNCE, payload, key=1, event_id=command_id)
        # The email's follow-up comes due: its requests are with the call already.
        await until(
            lambda: service.query("SELECT follow_up_done_at FROM emails WHERE id = :id", id=email_id)[0][0],
            30,
            "the email's follow-up handled",
        )
        await batch_runs_pass(service, 2)  # and a batch run after it
        assert len(service.events("communication.bounce_recorded")) == 1
        assert len(service.events("communication.email_suppressed")) == 1
        assert len(service.events("communication.phone_call_scheduled", therapist_id=1)) == 1
        assert service.query("SELECT count(*) FROM phone_call_batches") == [(2,)]
        assert len(service.mailbox.to(address(1))) == 1


async def test_three_soft_bounces_in_a_row_suppress_and_two_do_not(service: Service):
    await service.up()
    await service.therapists(therapist_created(2), therapist_created(3))
    await service.matches(match_created(21, 2, "2026-01-01T10:00:00+01:00"))
    [first] = await service.wait_event("communication.email_sent", therapist_id=2)
    emails = [first, await manual_email(service, 2, 2), await manual_email(service, 2, 3)]

    for n, sent in enumerate(emails[:2], start=1):
        await service.command(BOUNCE, {"email_id": sent["payload"]["email_id"], "type": "soft"}, key=2)
        recorded = await service.wait_event("communication.bounce_recorded", count=n, therapist_id=2)
        assert (recorded[-1]["payload"]["soft_bounce_count"], recorded[-1]["payload"]["suppressed"]) == (n, False)
    assert service.events("communication.email_suppressed") == []

    await service.command(BOUNCE, {"message_id": emails[2]["payload"]["message_id"], "type": "soft"}, key=2)
    recorded = await service.wait_event("communication.bounce_recorded", count=3, therapist_id=2)
    assert (recorded[-1]["payload"]["soft_bounce_count"], recorded[-1]["payload"]["suppressed"]) == (3, True)
    [suppressed] = await service.wait_event("communication.email_suppressed", therapist_id=2)
    assert suppressed["payload"]["reason"].startswith("3 soft bounces in a row")

    # Suppressed: a new request waits, no email goes.
    await service.matches(match_created(22, 2, "2026-01-02T10:00:00+01:00"))
    await service.forwarded("match_created", 2)
    await batch_runs_pass(service, 3)
    assert len(service.mailbox.to(address(2))) == 3


async def test_phone_only_therapists_get_calls_and_no_contact_email(service: Service):
    await service.up(COMM_CALL_MIN_NOTICE="0s")
    await service.therapists(
        therapist_created(3, availability=ALWAYS), therapist_created(4), therapist_created(5), therapist_created(6)
    )
    await service.known_for_calls(3)

    command_id = await service.command(PREFERENCE, {"therapist_id": 3, "channel": "phone_only", "reason": "bat darum"})
    [changed] = await service.wait_event("communication.contact_preference_changed", therapist_id=3)
    assert changed["payload"] == {
        "therapist_id": 3,
        "channel": "phone_only",
        "source": "command",
        "comment": "bat darum",
    }
    await service.command(PREFERENCE, {"therapist_id": 5, "channel": "phone_only"})  # no phone hours
    [alert] = await service.wait_event("communication.alert", therapist_id=5)
    assert (alert["payload"]["code"], alert["payload"]["severity"]) == ("phone_only_without_hours", "warning")

    await service.matches(
        match_created(31, 3, "2026-01-02T10:00:00+01:00"),
        match_created(32, 3, "2026-01-01T10:00:00+01:00"),
        match_created(51, 5, "2026-01-01T10:00:00+01:00"),
    )
    [call] = await service.wait_event("communication.phone_call_scheduled", therapist_id=3)
    assert call["payload"]["reason"] == "phone_only" and call["payload"]["placement_request_ids"] == [32, 31]
    await batch_runs_pass(service, 4, 6)  # two batch runs later
    assert service.mailbox.to(address(3)) == [] and service.mailbox.to(address(5)) == []
    assert len(service.events("communication.alert", therapist_id=5)) == 1  # once, not at every run

    # The command again, and the same channel under a new id: no second event.
    await service.command(
        PREFERENCE, {"therapist_id": 3, "channel": "phone_only", "reason": "bat darum"}, event_id=command_id
    )
    await service.command(PREFERENCE, {"therapist_id": 3, "channel": "phone_only"})
    back = await service.command(PREFERENCE, {"therapist_id": 3, "channel": "email"})
    [_, again] = await service.wait_event("communication.contact_preference_changed", count=2, therapist_id=3)
    assert again["payload"]["channel"] == "email" and again["causation_id"] == back
    await service.matches(match_created(33, 3, "2026-01-03T10:00:00+01:00"))
    [email] = await service.mailbox.wait_for(address(3), 1)
    assert "Pat33" in plain_text(email) and "Pat31" not in plain_text(email)
    assert len(service.events("communication.phone_call_scheduled", therapist_id=3)) == 1
