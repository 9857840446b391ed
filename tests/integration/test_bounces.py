"""``communication.record_bounce`` on the real databases (PostgreSQL on the running
server, SQLite): the email is found by id or Message-ID, a bounce of an unknown or
unsent email is rejected with a reason, the report goes to the therapist agent with
what the database knows; and the follow-up job does not call a request a second
time once it went to a call after its email bounced."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from domain.placement import PlacementRequest
from streams.messages import inbox
from streams.messages.commands import COMMANDS
from streams.messages.send_commands import BookCall
from streams.persistence import bounces, call_booking, email_creation, processed_commands
from streams.persistence.models import Email, OutboxMessage
from tests.integration.test_calls import MONDAY, POLICY, directory, follow_up, outbox, sent_email
from tests.integration.test_persistence import CHANNELS, IDENTITY, command, render

RECORD_BOUNCE = "communication.record_bounce"


def bounce(database, payload, command_id=None, therapist_id=0):
    """Carry out record_bounce (keyed by ``therapist_id``, as a bounce processor that
    does not know the therapist might); its outcome."""
    stored = processed_commands.Command(
        command_id or str(uuid.uuid4()), RECORD_BOUNCE, COMMANDS[RECORD_BOUNCE].model_validate(payload), therapist_id
    )
    return database.transaction(processed_commands.execute, stored, CHANNELS, MONDAY, bounces.HANDLERS)


def reported(database) -> list[inbox.BounceRecorded]:
    def read(session):
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.topic == CHANNELS.inbox))
        return [r.value for r in rows]

    messages = [inbox.decode(value) for value in database.transaction(read)]
    return [m for m in messages if isinstance(m, inbox.BounceRecorded)]


def message_id_of(database, email_id):
    return database.transaction(lambda s: s.get(Email, email_id).message_id)


def test_a_bounce_by_message_id_goes_to_the_therapist_agent_with_the_email_s_requests(database):
    directory(database, 1)
    first = sent_email(database, 1, [11, 12], MONDAY - timedelta(days=2))
    message_id = message_id_of(database, first)
    assert message_id.startswith("<") and message_id.endswith(">")

    command_id = str(uuid.uuid4())
    payload = {"message_id": message_id.strip("<>"), "type": "hard", "diagnostic": "550 5.1.1 t1@praxis.example"}
    assert bounce(database, payload, command_id) == "done"
    assert bounce(database, payload, command_id) == "replayed"

    [message] = reported(database)
    assert (message.command_id, message.therapist_id, message.bounce.email_id) == (command_id, 1, first)
    assert (message.bounce.type, message.bounce.address) == ("hard", "t1@praxis.example")
    assert message.bounce.sent_at == MONDAY - timedelta(days=2) and message.bounce.next_sent_at is None
    assert [r.placement_request_id for r in message.returned] == [11, 12]
    # The diagnostic (it may name the address) goes nowhere.
    assert all("550 5.1.1" not in json for _, json in _all_rows(database))


def test_the_next_email_to_the_address_comes_with_the_report(database):
    directory(database, 2)
    first = sent_email(database, 2, [21], MONDAY - timedelta(days=2))
    sent_email(database, 2, [22], MONDAY - timedelta(days=1))
    assert bounce(database, {"email_id": first, "type": "soft"}) == "done"
    [message] = reported(database)
    assert message.bounce.next_sent_at == MONDAY - timedelta(days=1)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"email_id": 999, "type": "hard"}, "there is no email 999"),
        ({"message_id": "<nie@gesendet.example>", "type": "soft"}, "no email was sent with Message-ID"),
    ],
)
def test_an_unknown_email_is_rejected_with_a_reason(database, payload, reason):
    assert bounce(database, payload) == "rejected"
    [rejected] = outbox(database, "communication.command_rejected")
    assert reason in rejected["payload"]["reason"]
    assert reported(database) == []


def test_an_email_never_sent_or_named_twice_differently_is_rejected(database):
    directory(database, 3)
    queued = database.transaction(
        email_creation.store_send_commands, [command("k-queued", therapist_id=3)], render, IDENTITY, CHANNELS, MONDAY
    )[0]
    sent = sent_email(database, 3, [31], MONDAY - timedelta(days=1))
    assert bounce(database, {"email_id": queued, "type": "hard"}) == "rejected"
    assert bounce(database, {"email_id": sent, "message_id": message_id_of(database, queued), "type": "hard"}) == (
        "rejected"
    )
    first, second = (e["payload"]["reason"] for e in outbox(database, "communication.command_rejected"))
    assert f"email {queued} was never sent" in first
    assert "another Message-ID" in second
    assert reported(database) == []


def test_a_request_booked_into_a_call_after_its_email_bounced_is_not_called_again(database):
    directory(database, 4)
    email_id = sent_email(database, 4, [41, 42], MONDAY - timedelta(days=7))
    # The bounce suppressed the address; the therapist agent booked a call for 41.
    decided = BookCall(4, "undeliverable-call-4", "undeliverable", (_request(41),), MONDAY - timedelta(days=6))
    database.transaction(call_booking.book_instead_of_email, decided, POLICY, CHANNELS, MONDAY - timedelta(days=6))
    assert follow_up(database, MONDAY)
    [first, second] = outbox(database, "communication.phone_call_scheduled")
    assert first["payload"]["placement_request_ids"] == [41] and first["payload"]["reason"] == "undeliverable"
    assert second["payload"]["placement_request_ids"] == [42] and second["payload"]["reason"] == "follow_up"

    # With every request taken over, the follow-up does nothing.
    directory(database, 5)
    other = sent_email(database, 5, [51], MONDAY - timedelta(days=7))
    decided = BookCall(5, "undeliverable-call-5", "undeliverable", (_request(51),), MONDAY - timedelta(days=6))
    database.transaction(call_booking.book_instead_of_email, decided, POLICY, CHANNELS, MONDAY - timedelta(days=6))
    assert follow_up(database, MONDAY)
    assert len(outbox(database, "communication.phone_call_scheduled")) == 3  # only the one just booked
    assert database.transaction(lambda s: s.get(Email, other).follow_up_done_at) == MONDAY
    assert other != email_id


def test_requests_answered_closed_or_called_about_do_not_go_back(database):
    directory(database, 7)
    email_id = sent_email(database, 7, [71, 72, 73, 74], MONDAY - timedelta(days=7))

    def answer(session):
        batches = {b.placement_request_id: b for b in session.get(Email, email_id).batches}
        batches[72].response_outcome = "no_capacity"
        batches[73].request_status = "withdrawn"

    database.transaction(answer)
    assert follow_up(database, MONDAY)  # a follow-up call about 71 and 74
    # A complaint a week later: the requests are with the call already.
    assert bounce(database, {"email_id": email_id, "type": "complaint"}) == "done"
    [message] = reported(database)
    assert message.returned == ()

    other = sent_email(database, 7, [75, 76], MONDAY - timedelta(days=1))
    database.transaction(lambda s: setattr(s.get(Email, other).batches[0], "response_outcome", "accepted"))
    assert bounce(database, {"email_id": other, "type": "hard"}) == "done"
    assert [r.placement_request_id for r in reported(database)[1].returned] == [76]


def _request(request_id):
    return PlacementRequest(request_id, request_id + 1000, MONDAY - timedelta(days=30))


def _all_rows(database):
    return database.transaction(lambda s: [(r.topic, r.value) for r in s.scalars(select(OutboxMessage))])


def test_the_requests_of_a_bounced_email_may_go_into_the_next_contact_email(database):
    """The therapist agent puts a hard-bounced email's open requests back to wait; the
    database's "emailed once" check must not then leave them out of the next email."""
    directory(database, 4)
    first = sent_email(database, 4, [41, 42], MONDAY - timedelta(days=9))
    assert bounce(database, {"email_id": first, "type": "hard"}) == "done"
    again = command("k-4-again", therapist_id=4, requests=[(41, "2026-01-01T10:00:00+00:00")])
    [email_id] = database.transaction(email_creation.store_send_commands, [again], render, IDENTITY, CHANNELS, MONDAY)
    assert email_id is not None
    assert database.transaction(lambda s: s.get(Email, email_id).placement_request_ids) == [41]


def test_a_request_of_a_sent_email_that_did_not_bounce_is_left_out(database):
    directory(database, 5)
    sent_email(database, 5, [51], MONDAY - timedelta(days=9))
    again = command("k-5-again", therapist_id=5, requests=[(51, "2026-01-01T10:00:00+00:00")])
    [email_id] = database.transaction(email_creation.store_send_commands, [again], render, IDENTITY, CHANNELS, MONDAY)
    assert email_id is None  # its only request was emailed: no email
