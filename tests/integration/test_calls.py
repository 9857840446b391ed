"""Phone follow-up on the real databases: booking, follow-ups, reminders, the daily
call list and the call commands (PostgreSQL on the running server, SQLite)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from domain.schedule import parse_cron
from domain.therapist import TherapistProfile
from streams.messages.commands import COMMANDS, ScheduleCall
from streams.messages.send_commands import DirectoryUpdate, SettleRequest
from streams.persistence import (
    call_booking,
    call_commands,
    call_jobs,
    delivery_queue,
    delivery_results,
    email_commands,
    email_creation,
    processed_commands,
    settled_requests,
)
from streams.persistence.directory import update_directory
from streams.persistence.models import Email, EmailBatch, OutboxMessage, PhoneCall
from tests.integration.test_persistence import CHANNELS, IDENTITY, command, render

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 23 November 2026, 09:00 Berlin
MONDAY = datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)
HOURS = {"monday": [{"start": "10:00", "end": "11:00"}], "tuesday": [{"start": "14:00", "end": "15:00"}]}
POLICY = call_booking.CallPolicy(
    slot=timedelta(minutes=5),
    min_notice=timedelta(hours=1),
    horizon=timedelta(weeks=4),
    capacity=None,
    reminder_before=timedelta(minutes=15),
    max_attempts=3,
    follow_up_after=timedelta(days=7),
    zone=BERLIN,
    daily_call_list=parse_cron("0 8 * * *", BERLIN),
)
HANDLERS = {
    **email_commands.HANDLERS,
    **{name: partial(handler, policy=POLICY) for name, handler in call_commands.CALL_HANDLERS.items()},
}


def directory(database, therapist_id, availability=HOURS, **changes):
    profile = TherapistProfile(
        therapist_id,
        f"t{therapist_id}@praxis.example",
        "Eva",
        "Müller",
        phone="+49 30 1",
        timezone="Europe/Berlin",
        availability=availability,
    )
    profile = replace(profile, **changes)
    database.transaction(update_directory, DirectoryUpdate(therapist_id, profile), CHANNELS, MONDAY)


def sent_email(database, therapist_id, request_ids, sent_at):
    cmd = command(
        f"k-{therapist_id}-{request_ids[0]}",
        therapist_id=therapist_id,
        requests=[(r, "2026-01-01T10:00:00+00:00") for r in request_ids],
    )
    email_id = database.transaction(email_creation.store_send_commands, [cmd], render, IDENTITY, CHANNELS, sent_at)[0]
    database.transaction(delivery_queue.claim_due, "w", sent_at, 100, timedelta(seconds=60), timedelta(seconds=1))
    database.transaction(delivery_results.record_sent_many, [(email_id, sent_at)], CHANNELS)
    return email_id


def outbox(database, event_type=None, topic=None):
    def read(session):
        rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [(r.topic, json.loads(r.value)) for r in rows]

    found = database.transaction(read)
    if topic is not None:
        return [doc for t, doc in found if t == topic]
    return [doc for t, doc in found if t == CHANNELS.events and (event_type is None or doc["event_type"] == event_type)]


def follow_up(database, now):
    return database.transaction(call_jobs.next_follow_up, POLICY, CHANNELS, now)


def test_follow_up_call_for_exactly_the_open_requests(database):
    directory(database, 1)
    email_id = sent_email(database, 1, [11, 12, 13, 14], MONDAY - timedelta(days=7))

    def answer(session):
        batches = {b.placement_request_id: b for b in session.scalars(select(EmailBatch))}
        batches[12].response_outcome = "no_capacity"
        batches[13].request_status = "accepted"
        batches[14].request_status = "withdrawn"

    database.transaction(answer)
    assert not follow_up(database, MONDAY - timedelta(seconds=1))  # not due yet
    assert follow_up(database, MONDAY)
    assert not follow_up(database, MONDAY)  # handled once
    [scheduled] = outbox(database, "communication.phone_call_scheduled")
    payload = scheduled["payload"]
    assert payload["placement_request_ids"] == [11] and payload["reason"] == "follow_up"
    # the first 5-minute slot inside Monday 10:00-11:00 at least an hour from 09:00
    assert datetime.fromisoformat(payload["scheduled_at"]) == datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert payload["duration_minutes"] == 5

    def stored(session):
        call = session.scalars(select(PhoneCall)).one()
        return call.email_id, [b.placement_request_id for b in call.batches]

    assert database.transaction(stored) == (email_id, [11])


def test_no_call_when_nothing_is_open(database):
    directory(database, 2)
    sent_email(database, 2, [21], MONDAY - timedelta(days=8))
    database.transaction(lambda s: setattr(s.scalars(select(EmailBatch)).one(), "response_outcome", "rejected"))
    assert follow_up(database, MONDAY)
    assert outbox(database, "communication.phone_call_scheduled") == []
    assert database.transaction(lambda s: s.scalars(select(Email)).one().follow_up_done_at) == MONDAY


def test_without_availability_a_follow_up_email_is_handed_to_the_therapist_agent(database):
    directory(database, 3, availability={})
    sent_email(database, 3, [31], MONDAY - timedelta(days=7))
    assert follow_up(database, MONDAY)
    [message] = [m for m in outbox(database, topic="inbox") if m.get("kind") == "follow_up_email"]
    assert message["therapist_id"] == 3 and [r["placement_request_id"] for r in message["requests"]] == [31]
    assert message["requests"][0]["patient"] == {"first_name": "P31", "diagnosis": "F32.1"}
    assert outbox(database, "communication.phone_call_scheduled") == []


def test_no_free_slot_raises_an_alert_and_falls_back_to_an_email(database):
    directory(database, 4, availability={"monday": [{"start": "10:00", "end": "10:05"}]})
    tight = call_booking.CallPolicy(**{**POLICY.__dict__, "horizon": timedelta(hours=3)})
    sent_email(database, 4, [41], MONDAY - timedelta(days=7))
    database.transaction(call_jobs.next_follow_up, tight, CHANNELS, MONDAY + timedelta(hours=1))  # 10:00 is past notice
    [alert] = outbox(database, "communication.alert")
    assert alert["payload"]["code"] == "no_call_slot"
    assert [m["kind"] for m in outbox(database, topic="inbox") if m.get("kind") == "follow_up_email"] == [
        "follow_up_email"
    ]


def run(database, command_type, payload, therapist_id=None, command_id=None):
    command_id = command_id or str(uuid.uuid5(uuid.NAMESPACE_URL, command_type + json.dumps(payload, sort_keys=True)))
    stored = processed_commands.Command(
        command_id, command_type, COMMANDS[command_type].model_validate(payload), therapist_id
    )
    return database.transaction(processed_commands.execute, stored, CHANNELS, MONDAY, HANDLERS)


def rejection(database):
    return outbox(database, "communication.command_rejected")[-1]["payload"]["reason"]


def schedule(database, therapist_id, request_ids, at=None):
    """Run schedule_phone_call: at ``at``, or at the next free slot."""
    payload = {"therapist_id": therapist_id, "placement_request_ids": request_ids}
    if at is not None:
        payload["scheduled_at"] = at.isoformat()
    return run(database, "communication.schedule_phone_call", payload)


def test_schedule_explicitly_or_next_free_and_conflicts(database):
    directory(database, 5)
    at = datetime(2026, 11, 23, 10, 30, tzinfo=BERLIN)
    assert schedule(database, 5, [51], at) == "done"
    assert schedule(database, 5, [52], at) == "rejected"
    assert "cannot be booked" in rejection(database)
    assert schedule(database, 5, [52], datetime(2026, 11, 23, 12, 0, tzinfo=BERLIN)) == "rejected"  # outside hours
    assert schedule(database, 5, [52], datetime(2026, 11, 23, 10, 32, tzinfo=BERLIN)) == "rejected"  # off grid
    assert schedule(database, 5, [52]) == "done"
    second = outbox(database, "communication.phone_call_scheduled")[-1]["payload"]
    assert datetime.fromisoformat(second["scheduled_at"]) == datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN)
    assert schedule(database, 99, [1]) == "rejected"
    assert "not known" in rejection(database)


def test_capacity_counts_calls_of_all_therapists(database):
    directory(database, 6)
    directory(database, 7)
    one_at_a_time = call_booking.CallPolicy(**{**POLICY.__dict__, "capacity": 1})
    handlers = {name: partial(handler, policy=one_at_a_time) for name, handler in call_commands.CALL_HANDLERS.items()}
    for therapist_id in (6, 7):
        stored = processed_commands.Command(
            f"cap-{therapist_id}",
            "communication.schedule_phone_call",
            ScheduleCall(therapist_id=therapist_id, placement_request_ids=[therapist_id]),
            None,
        )
        database.transaction(processed_commands.execute, stored, CHANNELS, MONDAY, handlers)
    starts = [p["payload"]["scheduled_at"] for p in outbox(database, "communication.phone_call_scheduled")]
    assert [datetime.fromisoformat(s) for s in starts] == [
        datetime(2026, 11, 23, 10, 0, tzinfo=BERLIN),
        datetime(2026, 11, 23, 10, 5, tzinfo=BERLIN),
    ]


def test_no_answer_reschedules_until_the_maximum_then_alerts(database):
    directory(database, 8)
    schedule(database, 8, [81])
    call_id = outbox(database, "communication.phone_call_scheduled")[-1]["payload"]["phone_call_id"]
    for attempt in (2, 3):
        assert (
            run(
                database,
                "communication.record_call_outcome",
                {"phone_call_id": call_id, "status": "no_answer"},
                command_id=f"no-answer-{attempt}",
            )
            == "done"
        )
        moved = outbox(database, "communication.phone_call_rescheduled")[-1]["payload"]
        assert moved["attempt"] == attempt and moved["scheduled_at"] != moved["previous_scheduled_at"]
    assert (
        run(
            database,
            "communication.record_call_outcome",
            {"phone_call_id": call_id, "status": "busy"},
            command_id="busy-3",
        )
        == "done"
    )
    assert outbox(database, "communication.alert")[-1]["payload"]["code"] == "call_busy"
    assert outbox(database, "communication.phone_call_completed")[-1]["payload"]["status"] == "busy"
    assert run(database, "communication.cancel_phone_call", {"phone_call_id": call_id}) == "rejected"
    assert "the call is busy, not scheduled" in rejection(database)


def test_completed_call_reports_each_answer(database):
    directory(database, 9)
    sent_email(database, 9, [91, 92], MONDAY - timedelta(days=7))
    follow_up(database, MONDAY)
    call_id = outbox(database, "communication.phone_call_scheduled")[-1]["payload"]["phone_call_id"]
    assert (
        run(
            database,
            "communication.record_call_outcome",
            {
                "phone_call_id": call_id,
                "status": "completed",
                "notes": "freundlich",
                "outcomes": [
                    {"placement_request_id": 91, "outcome": "accepted"},
                    {"placement_request_id": 93, "outcome": "rejected"},
                ],
            },
        )
        == "rejected"
    )
    assert "not about placement request(s) 93" in rejection(database)
    assert (
        run(
            database,
            "communication.record_call_outcome",
            {
                "phone_call_id": call_id,
                "status": "completed",
                "outcomes": [
                    {"placement_request_id": 91, "outcome": "accepted", "notes": "ab Januar"},
                    {"placement_request_id": 92, "outcome": "no_capacity"},
                ],
            },
        )
        == "done"
    )
    responses = outbox(database, "communication.placement_response")
    assert [
        (r["payload"]["placement_request_id"], r["payload"]["outcome"], r["payload"]["channel"]) for r in responses
    ] == [(91, "accepted", "phone"), (92, "no_capacity", "phone")]


def test_reminders_once_per_call_time_never_for_cancelled_calls(database):
    directory(database, 10)
    schedule(database, 10, [101])
    schedule(database, 10, [102])
    first, second = (p["payload"] for p in outbox(database, "communication.phone_call_scheduled"))
    at = datetime.fromisoformat(first["scheduled_at"])
    remind = lambda now: database.transaction(call_jobs.send_reminders, POLICY, CHANNELS, now)  # noqa: E731
    assert remind(at - timedelta(minutes=15, seconds=1)) == 0
    run(database, "communication.cancel_phone_call", {"phone_call_id": second["phone_call_id"], "reason": "erledigt"})
    assert remind(at - timedelta(minutes=15)) == 1  # the first call only: the second was cancelled
    assert remind(at - timedelta(minutes=10)) == 0  # once
    # moved: a reminder for the new time, when it is due
    new_at = datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN)
    run(
        database,
        "communication.update_phone_call",
        {"phone_call_id": first["phone_call_id"], "scheduled_at": new_at.isoformat()},
    )
    assert remind(at) == 0
    assert remind(new_at + timedelta(hours=2)) == 1  # late (the worker was down), not never
    reminders = [r["payload"] for r in outbox(database, "communication.phone_call_reminder")]
    assert [r["scheduled_at"] for r in reminders] == [at.isoformat(), new_at.astimezone(UTC).isoformat()]
    assert reminders[1]["late"] is True


def test_daily_call_list_once_per_day_with_the_days_calls_in_order(database):
    directory(database, 11)
    schedule(database, 11, [111], datetime(2026, 11, 23, 10, 30, tzinfo=BERLIN))
    schedule(database, 11, [112], datetime(2026, 11, 23, 10, 10, tzinfo=BERLIN))
    schedule(database, 11, [113], datetime(2026, 11, 24, 14, 0, tzinfo=BERLIN))
    daily = lambda now: database.transaction(call_jobs.daily_call_list, POLICY, CHANNELS, now)  # noqa: E731
    assert daily(MONDAY)  # the 08:00 run of Monday, done at 09:00 (late is better than never)
    assert not daily(MONDAY + timedelta(hours=3))
    [listed] = outbox(database, "communication.daily_call_list")
    assert listed["payload"]["date"] == "2026-11-23" and listed["payload"]["therapist_id"] is None
    assert [c["placement_request_ids"] for c in listed["payload"]["calls"]] == [[112], [111]]
    assert listed["payload"]["calls"][0]["phone"] == "+49 30 1"
    assert daily(MONDAY + timedelta(days=1))  # Tuesday's list
    assert [
        c["placement_request_ids"] for c in outbox(database, "communication.daily_call_list")[-1]["payload"]["calls"]
    ] == [[113]]


def test_deleting_a_therapist_cancels_their_calls(database):
    directory(database, 12)
    schedule(database, 12, [121])
    database.transaction(update_directory, DirectoryUpdate(12, None, deleted=True), CHANNELS, MONDAY)
    [cancelled] = outbox(database, "communication.phone_call_cancelled")
    assert cancelled["payload"]["reason"] == "therapist_deleted"
    assert schedule(database, 12, [1]) == "rejected"
    assert "was deleted" in rejection(database)


@pytest.mark.parametrize("command_type", ["communication.update_phone_call", "communication.cancel_phone_call"])
def test_unknown_call_is_rejected(database, command_type):
    payload = {"phone_call_id": 424242, "notes": "x"} if "update" in command_type else {"phone_call_id": 424242}
    assert run(database, command_type, payload) == "rejected"
    assert rejection(database) == "there is no phone call 424242"


def test_closed_or_answered_requests_leave_the_booked_call(database):
    directory(database, 13)
    email_id = sent_email(database, 13, [131, 132, 133], MONDAY - timedelta(days=7))
    follow_up(database, MONDAY)
    call_id = outbox(database, "communication.phone_call_scheduled")[-1]["payload"]["phone_call_id"]
    database.transaction(settled_requests.settle_request, SettleRequest(13, 131, "withdrawn"), CHANNELS, MONDAY)
    [updated] = outbox(database, "communication.phone_call_updated")
    assert updated["payload"]["placement_request_ids"] == [132, 133]
    assert updated["payload"]["removed_placement_request_ids"] == [131]
    response = {
        "email_id": email_id,
        "received_at": MONDAY.isoformat(),
        "responses": [
            {"placement_request_id": 132, "outcome": "rejected"},
            {"placement_request_id": 133, "outcome": "no_capacity"},
        ],
    }
    assert run(database, "communication.record_email_response", response) == "done"
    [cancelled] = outbox(database, "communication.phone_call_cancelled")
    assert cancelled["payload"]["phone_call_id"] == call_id
    assert "no open requests left" in cancelled["payload"]["reason"]


def test_an_answer_without_outcomes_means_no_follow_up(database):
    directory(database, 14)
    email_id = sent_email(database, 14, [141], MONDAY - timedelta(days=7))
    run(
        database,
        "communication.record_email_response",
        {"email_id": email_id, "received_at": MONDAY.isoformat(), "content": "Ich melde mich nächste Woche."},
    )
    assert follow_up(database, MONDAY)
    assert outbox(database, "communication.phone_call_scheduled") == []
