"""Bounces, the phone-only preference and the send window in the agents, against fake
topics and a dict as the table (no broker, no database): what the therapist agent
publishes, and how the command agent routes the two commands."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.bounces import Bounce
from domain.therapist_state import PHONE_ONLY, TherapistState
from streams.agents.therapist import TherapistAgent
from streams.agents.ticks import partition_of
from streams.messages import inbox, send_commands
from streams.messages.commands import RecordBounce
from streams.settings import Settings
from tests.fakes import FakeClock, RecordStream, recording_topics, sent
from tests.unit.test_command_agent import Executed, command
from tests.unit.test_command_agent import agent as command_agent
from tests.unit.test_therapist_agent import HOURS, MONDAY, PARTITIONS, SETTINGS, commands, events, match, upserted

T7 = partition_of(7, PARTITIONS)
# Monday 23 November 2026 08:00 Berlin; the batch run is daily at 09:00 Berlin time.
WINDOWED = Settings.from_environ(
    {"COMM_PARTITIONS": str(PARTITIONS), "COMM_BATCH_SCHEDULE": "0 9 * * *", "COMM_SEND_WINDOW": "mon-fri 08:00-18:00"}
)


def agent_at(settings: Settings = SETTINGS) -> tuple[TherapistAgent, dict[object, object], FakeClock]:
    clock = FakeClock(MONDAY)
    table: dict[object, object] = {}
    return TherapistAgent(settings, recording_topics(), table, clock), table, clock  # type: ignore[arg-type]


def of_type(agent: TherapistAgent, event_type: str) -> list[dict[str, object]]:
    return [e for e in events(agent) if e["event_type"] == event_type]


def emails(agent: TherapistAgent) -> list[send_commands.SendEmail]:
    return [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]


def calls(agent: TherapistAgent) -> list[send_commands.BookCall]:
    return [c for c in commands(agent) if isinstance(c, send_commands.BookCall)]


async def batch_run(agent: TherapistAgent, clock: FakeClock, at: datetime, partition: int = T7) -> None:
    """A tick that sets the bookmark (the first), then one at ``at``."""
    await agent.handle(inbox.Tick(clock.now), partition)
    clock.now = at
    await agent.handle(inbox.Tick(at), partition)


async def sent_email(agent: TherapistAgent, clock: FakeClock) -> send_commands.SendEmail:
    await agent.handle(upserted(7, availability=HOURS), T7)
    await agent.handle(match(1, 7, 30), T7)
    await batch_run(agent, clock, MONDAY.replace(hour=9, minute=1))
    [email] = emails(agent)
    await agent.handle(inbox.EmailSent(7, email.email_key, True, clock.now), T7)
    return email


async def test_a_hard_bounce_publishes_bounce_recorded_once_suppresses_and_books_a_call() -> None:
    agent, table, clock = agent_at()
    email = await sent_email(agent, clock)
    bounce = Bounce("hard", "praxis7@example.org", 42, clock.now)
    message = inbox.BounceRecorded("c-1", 7, email.email_key, bounce, email.requests)
    await agent.handle(message, T7)
    await agent.handle(message, T7)  # the outbox relay may deliver it twice

    [recorded] = of_type(agent, "communication.bounce_recorded")
    assert recorded["payload"] == {
        "therapist_id": 7,
        "email_id": 42,
        "type": "hard",
        "soft_bounce_count": 0,
        "suppressed": True,
    }
    assert recorded["causation_id"] == "c-1"
    [suppressed] = of_type(agent, "communication.email_suppressed")
    assert suppressed["payload"]["reason"] == "hard bounce reported for email 42"  # type: ignore[index]
    [alert] = of_type(agent, "communication.alert")
    assert alert["payload"]["code"] == "email_undeliverable"  # type: ignore[index]
    assert "praxis7@example.org" not in json.dumps(events(agent))  # addresses only as a hash
    [call] = calls(agent)
    assert call.reason == "undeliverable" and [r.placement_request_id for r in call.requests] == [1]
    stored = table[7]
    assert isinstance(stored, TherapistState) and stored.suppression is not None


async def test_a_soft_bounce_below_the_limit_is_counted_and_reported() -> None:
    agent, table, clock = agent_at()
    email = await sent_email(agent, clock)
    bounce = Bounce("soft", "praxis7@example.org", 42, clock.now)
    await agent.handle(inbox.BounceRecorded("c-1", 7, email.email_key, bounce, email.requests), T7)
    [recorded] = of_type(agent, "communication.bounce_recorded")
    assert (recorded["payload"]["soft_bounce_count"], recorded["payload"]["suppressed"]) == (1, False)  # type: ignore[index]
    assert of_type(agent, "communication.email_suppressed") == [] and calls(agent) == []
    stored = table[7]
    assert isinstance(stored, TherapistState) and stored.soft_bounces is not None


async def test_phone_only_from_staff_books_a_call_now_and_at_later_batch_runs_and_emails_nothing() -> None:
    agent, table, clock = agent_at()
    await agent.handle(upserted(7, availability=HOURS), T7)
    await agent.handle(match(1, 7, 30), T7)
    preference = inbox.SetContactPreference("c-1", 7, PHONE_ONLY, "command", "bat um Anrufe")
    await agent.handle(preference, T7)
    await agent.handle(preference, T7)  # a replay

    [changed] = of_type(agent, "communication.contact_preference_changed")
    assert changed["payload"] == {
        "therapist_id": 7,
        "channel": "phone_only",
        "source": "command",
        "comment": "bat um Anrufe",
    }
    assert changed["causation_id"] == "c-1"
    [call] = calls(agent)
    assert call.reason == "phone_only" and [r.placement_request_id for r in call.requests] == [1]

    await agent.handle(match(2, 7, 10), T7)
    await batch_run(agent, clock, MONDAY.replace(hour=9, minute=1))
    assert emails(agent) == []
    assert [[r.placement_request_id for r in c.requests] for c in calls(agent)] == [[1], [2]]
    assert calls(agent)[1].reason == "phone_only"
    stored = table[7]
    assert isinstance(stored, TherapistState) and stored.pending == {}


async def test_phone_only_without_hours_alerts_once_and_the_requests_wait() -> None:
    agent, table, clock = agent_at()
    await agent.handle(upserted(7), T7)
    await agent.handle(match(1, 7, 30), T7)
    await agent.handle(inbox.SetContactPreference("c-1", 7, PHONE_ONLY, "command"), T7)
    await batch_run(agent, clock, MONDAY.replace(hour=9, minute=1))
    clock.now += timedelta(days=1)
    await agent.handle(inbox.Tick(clock.now), T7)

    [alert] = of_type(agent, "communication.alert")
    assert (alert["payload"]["code"], alert["payload"]["severity"]) == ("phone_only_without_hours", "warning")  # type: ignore[index]
    assert emails(agent) == [] and calls(agent) == []
    stored = table[7]
    assert isinstance(stored, TherapistState) and list(stored.pending) == [1]


async def test_a_one_click_opt_out_for_an_old_address_changes_nothing() -> None:
    agent, table, _ = agent_at()
    await agent.handle(upserted(7, availability=HOURS), T7)
    await agent.handle(inbox.SetContactPreference("o-1", 7, PHONE_ONLY, "one_click", address="alt@example.org"), T7)
    assert of_type(agent, "communication.contact_preference_changed") == []
    stored = table[7]
    assert isinstance(stored, TherapistState) and stored.contact_channel == "email"
    await agent.handle(inbox.SetContactPreference("o-2", 7, PHONE_ONLY, "one_click", address="praxis7@example.org"), T7)
    [changed] = of_type(agent, "communication.contact_preference_changed")
    assert changed["payload"]["source"] == "one_click"  # type: ignore[index]


# -- the send window at the batch run ----------------------------------------------------


@pytest.mark.parametrize(
    ("run_at", "emailed"),
    [
        pytest.param(datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")), True, id="Monday 09:00: open"),
        pytest.param(datetime(2026, 11, 28, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")), False, id="Saturday: closed"),
    ],
)
async def test_a_batch_run_outside_the_send_window_decides_nothing_for_the_therapist(
    run_at: datetime, emailed: bool
) -> None:
    agent, table, clock = agent_at(WINDOWED)
    clock.now = run_at - timedelta(hours=1)
    await agent.handle(upserted(7), T7)
    await agent.handle(match(1, 7, 30), T7)
    await batch_run(agent, clock, run_at + timedelta(minutes=1))
    assert len(emails(agent)) == (1 if emailed else 0)
    stored = table[7]
    assert isinstance(stored, TherapistState) and bool(stored.pending) is not emailed


async def test_the_window_is_read_in_the_therapist_s_time_zone_and_the_requests_go_at_the_first_run_inside() -> None:
    twice_a_day = Settings.from_environ(
        {
            "COMM_PARTITIONS": str(PARTITIONS),
            "COMM_BATCH_SCHEDULE": "0 9,15 * * *",
            "COMM_SEND_WINDOW": "mon-fri 08:00-18:00",
        }
    )
    agent, table, clock = agent_at(twice_a_day)
    # 09:00 in Berlin is 03:00 in New York: open in Berlin, closed there.
    await agent.handle(upserted(7, timezone="America/New_York"), T7)
    berliner = next(t for t in range(8, 1000) if partition_of(t, PARTITIONS) == T7)
    await agent.handle(upserted(berliner), T7)
    await agent.handle(match(1, 7, 30), T7)
    await agent.handle(match(2, berliner, 30), T7)
    await batch_run(agent, clock, MONDAY.replace(hour=9, minute=1))
    assert [e.therapist_id for e in emails(agent)] == [berliner]
    stored = table[7]
    assert isinstance(stored, TherapistState) and list(stored.pending) == [1]

    clock.now = MONDAY.replace(hour=15, minute=1)  # the 15:00 run is at 09:00 in New York
    await agent.handle(inbox.Tick(clock.now), T7)
    assert [e.therapist_id for e in emails(agent)] == [berliner, 7]


# -- the command agent ----------------------------------------------------------------


async def test_set_contact_preference_goes_to_the_therapist_s_inbox_as_a_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    executed = Executed(monkeypatch)
    agent, database = command_agent()
    payload = {"therapist_id": 7, "channel": "phone_only", "reason": "bat um Anrufe"}
    await agent(RecordStream([command("communication.set_contact_preference", payload)]))  # type: ignore[arg-type]

    [forwarded] = sent(agent.topics.inbox)
    assert forwarded.key == b"7"
    message = inbox.decode(forwarded.value)
    assert isinstance(message, inbox.SetContactPreference)
    assert (message.channel, message.source, message.comment, message.address) == (
        "phone_only",
        "command",
        "bat um Anrufe",
        None,
    )
    assert database.runs == [] and executed.commands == []


async def test_record_bounce_is_carried_out_in_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    executed = Executed(monkeypatch)
    agent, database = command_agent()
    payload = {"message_id": "<k1@therapieplatz.example>", "type": "soft", "diagnostic": "452 4.2.2 mailbox full"}
    await agent(RecordStream([command("communication.record_bounce", payload)]))  # type: ignore[arg-type]

    assert len(database.runs) == 1 and sent(agent.topics.inbox) == []
    [carried_out] = executed.commands
    assert isinstance(carried_out.payload, RecordBounce)
    assert (carried_out.payload.message_id, carried_out.payload.type) == ("<k1@therapieplatz.example>", "soft")
