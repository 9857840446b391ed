"""Phone follow-up end to end (CONTRACT §5.4, §5.5; issue 5): follow-up calls for
exactly the open requests, follow-up emails, attempts, reminders, commands."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from tests.e2e.harness import Service, plain_text
from tests.events import match_created, match_status_changed, therapist_created

BERLIN = ZoneInfo("Europe/Berlin")
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
PHONE = {"COMM_FOLLOW_UP_AFTER": "6s", "COMM_CALL_MIN_NOTICE": "0s"}
INTERVAL = 8.0
SCHEDULE = "communication.schedule_phone_call"
OUTCOME = "communication.record_call_outcome"


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def on_grid(moment: str) -> bool:
    local = datetime.fromisoformat(moment).astimezone(BERLIN)
    return local.minute % 5 == 0 and local.second == 0


async def test_follow_up_call_for_exactly_the_open_requests(make_service):
    async with make_service(**PHONE) as service:
        await service.up()
        await service.therapists(therapist_created(1, availability=ALWAYS))
        for n, request_id in enumerate((11, 12, 13)):
            await service.matches(match_created(request_id, 1, f"2026-01-0{n + 1}T10:00:00+01:00"))
        [sent] = await service.wait_event("communication.email_sent", therapist_id=1)
        email_id = sent["payload"]["email_id"]
        await service.command(
            "communication.record_email_response",
            {
                "email_id": email_id,
                "received_at": datetime.now(UTC).isoformat(),
                "responses": [{"placement_request_id": 12, "outcome": "no_capacity"}],
            },
            key=1,
        )
        await service.matches(match_status_changed(13, 1, "withdrawn"))
        [scheduled] = await service.wait_event("communication.phone_call_scheduled", therapist_id=1, timeout=30)
        payload = scheduled["payload"]
        assert payload["placement_request_ids"] == [11] and payload["reason"] == "follow_up"
        assert on_grid(payload["scheduled_at"]) and payload["duration_minutes"] == 5
        assert service.query("SELECT email_id FROM phone_calls") == [(email_id,)]


async def test_therapist_without_hours_gets_a_follow_up_email_within_the_weekly_limit(make_service):
    async with make_service(**PHONE) as service:
        await service.up()
        await service.therapists(therapist_created(2))  # no availability
        await service.matches(match_created(21, 2, "2026-01-01T10:00:00+01:00"))
        [first] = await service.mailbox.wait_for(address(2), 1)
        _, follow_up = await service.mailbox.wait_for(address(2), 2, timeout=40)
        assert follow_up.received_at - first.received_at >= INTERVAL  # the weekly rule holds for it too
        assert "Pat21" in plain_text(follow_up)
        kinds = [e["payload"]["kind"] for e in service.events("communication.email_created", therapist_id=2)]
        assert kinds == ["contact_request", "follow_up"]
        assert service.events("communication.phone_call_scheduled") == []


async def test_no_answer_is_retried_up_to_the_maximum_then_an_alert(make_service):
    async with make_service(**PHONE, COMM_MAX_CALL_ATTEMPTS="3") as service:
        await service.up()
        await service.therapists(therapist_created(3, availability=ALWAYS))
        await service.known_for_calls(3)
        await service.command(SCHEDULE, {"therapist_id": 3, "placement_request_ids": [31]})
        [scheduled] = await service.wait_event("communication.phone_call_scheduled", therapist_id=3)
        call_id = scheduled["payload"]["phone_call_id"]
        for attempt in (2, 3):
            await service.command(OUTCOME, {"phone_call_id": call_id, "status": "no_answer"}, key=3)
            moved = await service.wait_event("communication.phone_call_rescheduled", count=attempt - 1, therapist_id=3)
            assert moved[-1]["payload"]["attempt"] == attempt
            assert moved[-1]["payload"]["scheduled_at"] > moved[-1]["payload"]["previous_scheduled_at"]
        await service.command(OUTCOME, {"phone_call_id": call_id, "status": "busy"}, key=3)
        [alert] = await service.wait_event("communication.alert", therapist_id=3)
        assert alert["payload"]["code"] == "call_busy" and "3 attempt(s)" in alert["payload"]["message"]
        [done] = await service.wait_event("communication.phone_call_completed", therapist_id=3)
        assert done["payload"]["status"] == "busy"


async def test_reminder_once_and_late_after_downtime(make_service):
    # A call ~3 minutes ahead whose reminder falls due ~12 s from now, while no worker runs.
    now = datetime.now(UTC)
    call_at = (now + timedelta(minutes=3)).replace(second=0, microsecond=0)
    call_at += timedelta(minutes=-call_at.minute % 5)
    before = int((call_at - now).total_seconds()) - 12
    async with make_service(**PHONE, COMM_CALL_REMINDER_BEFORE=f"{before}s") as service:
        worker = await service.up()
        await service.therapists(therapist_created(4, availability=ALWAYS))
        await service.known_for_calls(4)
        await service.command(
            SCHEDULE, {"therapist_id": 4, "placement_request_ids": [41], "scheduled_at": call_at.isoformat()}
        )
        [scheduled] = await service.wait_event("communication.phone_call_scheduled", therapist_id=4)
        assert service.events("communication.phone_call_reminder") == []
        worker.terminate()
        due = call_at - timedelta(seconds=before)
        while datetime.now(UTC) < due + timedelta(seconds=2):
            await asyncio.sleep(0.2)  # the reminder falls due while no worker is running
        await service.start_worker()
        [reminder] = await service.wait_event("communication.phone_call_reminder", therapist_id=4)
        assert reminder["payload"]["phone_call_id"] == scheduled["payload"]["phone_call_id"]
        assert datetime.fromisoformat(reminder["payload"]["scheduled_at"]) == call_at
        # Once: another therapist's call at the same time is reminded at a later pass of
        # the reminder job; by then the first call has still had exactly one reminder.
        await service.therapists(therapist_created(44, availability=ALWAYS))
        await service.known_for_calls(44)
        await service.command(
            SCHEDULE, {"therapist_id": 44, "placement_request_ids": [441], "scheduled_at": call_at.isoformat()}
        )
        await service.wait_event("communication.phone_call_reminder", therapist_id=44)
        reminders = [
            r for r in service.events("communication.phone_call_reminder") if r["payload"]["therapist_id"] == 4
        ]
        assert len(reminders) == 1
        assert datetime.fromisoformat(reminders[0]["occurred_at"]) > due  # emitted late, at restart, not never


def next_tuesday_ten(zone: ZoneInfo) -> datetime:
    """10:00 local on a Tuesday at least a day ahead: on the slot grid, in the future, and
    outside hours that are only on Mondays, whatever today's date is."""
    day = datetime.now(zone).date() + timedelta(days=1)
    day += timedelta(days=(1 - day.weekday()) % 7)
    return datetime.combine(day, time(10, 0), tzinfo=zone)


def zone_away_from_midnight() -> ZoneInfo:
    """Berlin, or Tokyo when Berlin is near midnight. A daily list covers the day it is
    made on, and a call booked in a day's last minutes falls on the next day, whose
    lists only start at midnight."""
    if 1 <= datetime.now(BERLIN).hour <= 22:
        return BERLIN
    return ZoneInfo("Asia/Tokyo")  # eight hours ahead: mid-morning


async def test_cancel_rejections_deletion_and_the_daily_list(make_service):
    hours = {"monday": [{"start": "10:00", "end": "11:00"}]}
    zone = zone_away_from_midnight()
    async with make_service(**PHONE, COMM_DAILY_CALL_LIST="3s", COMM_TIMEZONE=zone.key) as service:
        await service.up()
        await service.therapists(therapist_created(5, availability=ALWAYS), therapist_created(6, availability=hours))
        await service.known_for_calls(5, 6)
        await service.command(SCHEDULE, {"therapist_id": 5, "placement_request_ids": [51]})
        [first] = await service.wait_event("communication.phone_call_scheduled", therapist_id=5)
        call_id = first["payload"]["phone_call_id"]
        local_day = datetime.fromisoformat(first["payload"]["scheduled_at"]).astimezone(zone).date().isoformat()
        [listed] = await service.collector.wait_for(
            lambda: [
                e
                for e in service.events("communication.daily_call_list")
                if e["payload"]["date"] == local_day and call_id in [c["phone_call_id"] for c in e["payload"]["calls"]]
            ],
            what="the call in a daily call list",
        )
        assert listed["payload"]["therapist_id"] is None

        # A slot taken, days ahead (the first call's own slot may pass while the test runs).
        taken = next_tuesday_ten(zone).isoformat()
        await service.command(SCHEDULE, {"therapist_id": 5, "placement_request_ids": [53], "scheduled_at": taken})
        await service.wait_event("communication.phone_call_scheduled", count=2, therapist_id=5)
        cases = {
            await service.command(
                SCHEDULE, {"therapist_id": 5, "placement_request_ids": [52], "scheduled_at": taken}
            ): "cannot be booked",
            await service.command(
                SCHEDULE,
                {"therapist_id": 6, "placement_request_ids": [61], "scheduled_at": next_tuesday_ten(zone).isoformat()},
            ): "cannot be booked",
            await service.command(SCHEDULE, {"therapist_id": 99, "placement_request_ids": [1]}): "not known",
            await service.command(
                OUTCOME,
                {
                    "phone_call_id": call_id,
                    "status": "completed",
                    "outcomes": [{"placement_request_id": 77, "outcome": "accepted"}],
                },
                key=5,
            ): "not about placement request(s) 77",
            await service.command(
                "communication.update_phone_call", {"phone_call_id": 424242, "notes": "x"}, key=5
            ): "there is no phone call 424242",
        }
        for command_id, fragment in cases.items():
            assert fragment in await service.rejection(command_id)

        await service.command(
            "communication.cancel_phone_call", {"phone_call_id": call_id, "reason": "Praxis geschlossen"}, key=5
        )
        [cancelled] = await service.wait_event("communication.phone_call_cancelled", phone_call_id=call_id)
        assert cancelled["payload"]["reason"] == "Praxis geschlossen"
        again = await service.command("communication.cancel_phone_call", {"phone_call_id": call_id}, key=5)
        assert "the call is cancelled, not scheduled" in await service.rejection(again)

        await service.command(SCHEDULE, {"therapist_id": 5, "placement_request_ids": [53]})
        [_, second] = await service.wait_event("communication.phone_call_scheduled", count=2, therapist_id=5)
        await service.publisher.send(
            service.topics.therapists,
            5,
            {**therapist_created(5), "event_type": "therapist.deleted", "payload": {"therapist_id": 5}},
        )
        [gone] = await service.wait_event(
            "communication.phone_call_cancelled", phone_call_id=second["payload"]["phone_call_id"]
        )
        assert gone["payload"]["reason"] == "therapist_deleted"


async def test_invalid_availability_is_refused_and_the_rest_applies(service: Service):
    await service.up()
    await service.therapists(therapist_created(7, availability=ALWAYS))
    broken = therapist_created(
        7, email="neue.adresse@praxis.example", availability={"monday": [{"start": "12:00", "end": "09:00"}]}
    )
    broken["event_type"] = "therapist.updated"
    await service.therapists(broken)
    [dead] = await service.collector.wait_for(lambda: service.dead_letters(), what="the refused availability")
    assert "availability.monday[0]: end 09:00 is not after start 12:00" in dead["reason"]
    assert "the rest of the event was applied" in dead["reason"]
    await service.matches(match_created(71, 7, "2026-01-01T10:00:00+01:00"))
    [email] = await service.mailbox.wait_for("neue.adresse@praxis.example", 1)  # the new address applied
    await service.known_for_calls(7)
    assert "Pat71" in plain_text(email)
    # the previous availability stays: a call can still be booked
    await service.command(SCHEDULE, {"therapist_id": 7, "placement_request_ids": [71]})
    await service.wait_event("communication.phone_call_scheduled", therapist_id=7)
