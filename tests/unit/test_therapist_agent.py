"""The therapist agent's handling of inbox messages, against fake topics and a dict
as its table (no broker): what it publishes, in which order, and what it stores."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import TherapistState, Undeliverable
from streams.agents import therapist as therapist_agent
from streams.agents.therapist import StateTooLarge, TherapistAgent
from streams.agents.ticks import bookmark_key, partition_of
from streams.messages import inbox, send_commands
from streams.messages.codec import encode
from streams.settings import Settings
from tests.fakes import FakeClock, Record, RecordStream, recording_topics, sent

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 23 November 2026; the batch run is daily at 09:00 Berlin time.
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN)
PARTITIONS = 4
SETTINGS = Settings.from_environ({"COMM_PARTITIONS": str(PARTITIONS), "COMM_BATCH_SCHEDULE": "0 9 * * *"})
HOURS = {"monday": [{"start": "10:00", "end": "12:00"}]}


def agent_at(now: datetime = MONDAY) -> tuple[TherapistAgent, dict[object, object], FakeClock]:
    clock = FakeClock(now)
    table: dict[object, object] = {}
    return TherapistAgent(SETTINGS, recording_topics(), table, clock), table, clock  # type: ignore[arg-type]


def profile(therapist_id: int, **changes: object) -> TherapistProfile:
    fields: dict[str, object] = {
        "therapist_id": therapist_id,
        "email": f"praxis{therapist_id}@example.org",
        "first_name": "Eva",
        "last_name": "Müller",
        **changes,
    }
    return TherapistProfile(**fields)  # type: ignore[arg-type]


def upserted(therapist_id: int, event_id: str = "t-1", **changes: object) -> inbox.TherapistUpserted:
    return inbox.TherapistUpserted(event_id, therapist_id, MONDAY - timedelta(days=1), profile(therapist_id, **changes))


def match(request_id: int, therapist_id: int, days_waiting: int, event_id: str | None = None) -> inbox.MatchCreated:
    request = PlacementRequest(
        request_id, request_id + 1000, MONDAY - timedelta(days=days_waiting), {"first_name": f"Pat{request_id}"}
    )
    return inbox.MatchCreated(event_id or f"m-{request_id}", therapist_id, request)


def commands(agent: TherapistAgent) -> list[send_commands.SendCommand]:
    return [send_commands.decode(s.value) for s in sent(agent.topics.send_commands)]


def events(agent: TherapistAgent) -> list[dict[str, object]]:
    return [json.loads(s.value) for s in sent(agent.topics.events)]


def therapist_on(partition: int, after: int = 0) -> int:
    return next(t for t in range(after + 1, 10_000) if partition_of(t, PARTITIONS) == partition)


async def test_a_new_request_waits_in_the_table_and_its_details_go_downstream() -> None:
    agent, table, _ = agent_at()
    await agent.handle(match(4711, 7, days_waiting=30), partition_of(7, PARTITIONS))

    state = table[7]
    assert isinstance(state, TherapistState)
    assert list(state.pending) == [4711]
    assert state.pending[4711].patient == {}  # the table keeps ids and times only
    [details] = commands(agent)
    assert isinstance(details, send_commands.RequestDetails)
    assert details.request.patient == {"first_name": "Pat4711"}
    assert sent(agent.topics.send_commands)[0].key == b"7"


async def test_a_replayed_event_stores_nothing_new() -> None:
    agent, table, _ = agent_at()
    partition = partition_of(7, PARTITIONS)
    await agent.handle(match(4711, 7, 30), partition)
    before = table[7]
    await agent.handle(match(4711, 7, 30), partition)

    assert isinstance(before, TherapistState)
    after = table[7]
    assert isinstance(after, TherapistState)
    assert list(after.pending) == [4711]
    assert after.seen_events == before.seen_events
    # Only the details are sent again (idempotent downstream), nothing else.
    assert all(isinstance(c, send_commands.RequestDetails) for c in commands(agent))


async def test_a_batch_run_emails_each_waiting_therapist_of_its_partition_once_oldest_first() -> None:
    agent, table, clock = agent_at()
    here = therapist_on(1)
    elsewhere = therapist_on(2)
    for therapist_id in (here, elsewhere):
        await agent.handle(upserted(therapist_id), partition_of(therapist_id, PARTITIONS))
    await agent.handle(match(2, here, days_waiting=10), 1)
    await agent.handle(match(1, here, days_waiting=40), 1)
    await agent.handle(match(3, elsewhere, days_waiting=50), 2)
    before = len(commands(agent))

    await agent.handle(inbox.Tick(clock.now), 1)  # the first tick only sets the bookmark
    assert len(commands(agent)) == before
    assert bookmark_key(1) in table

    clock.now = MONDAY.replace(hour=9, minute=1)
    await agent.handle(inbox.Tick(clock.now), 1)
    emails = [c for c in commands(agent)[before:] if isinstance(c, send_commands.SendEmail)]
    assert [(e.therapist_id, [r.placement_request_id for r in e.requests]) for e in emails] == [(here, [1, 2])]
    assert emails[0].template == "batch_request"
    stored = table[here]
    assert isinstance(stored, TherapistState)
    assert not stored.pending and len(stored.in_flight) == 1

    clock.now += timedelta(minutes=1)
    await agent.handle(inbox.Tick(clock.now), 1)  # the run of 09:00 is done
    assert len([c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]) == 1
    other = table[elsewhere]
    assert isinstance(other, TherapistState)
    assert list(other.pending) == [3]  # partition 2 was not ticked


async def test_the_weekly_window_holds_until_the_send_is_confirmed_and_then_for_the_interval() -> None:
    agent, table, clock = agent_at()
    partition = partition_of(7, PARTITIONS)
    await agent.handle(upserted(7), partition)
    await agent.handle(match(1, 7, 30), partition)
    await agent.handle(inbox.Tick(clock.now), partition)
    clock.now = MONDAY.replace(hour=9, minute=1)
    await agent.handle(inbox.Tick(clock.now), partition)
    [email] = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]
    await agent.handle(inbox.EmailSent(7, email.email_key, True, clock.now), partition)
    await agent.handle(match(2, 7, 5), partition)

    clock.now += timedelta(days=1)  # Tuesday 09:01: inside the week
    await agent.handle(inbox.Tick(clock.now), partition)
    assert len([c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]) == 1

    clock.now += timedelta(days=6)  # the next Monday: its 09:00 run is a minute inside the week
    await agent.handle(inbox.Tick(clock.now), partition)
    assert len([c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]) == 1

    clock.now += timedelta(days=1)  # so the first run after the window is Tuesday's
    await agent.handle(inbox.Tick(clock.now), partition)
    later = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)][1:]
    assert [[r.placement_request_id for r in e.requests] for e in later] == [[2]]
    stored = table[7]
    assert isinstance(stored, TherapistState)
    assert not stored.pending


async def test_an_undeliverable_address_is_suppressed_and_reported_without_the_address() -> None:
    agent, table, clock = agent_at()
    partition = partition_of(7, PARTITIONS)
    await agent.handle(upserted(7, availability=HOURS), partition)
    await agent.handle(match(1, 7, 30), partition)
    await agent.handle(inbox.Tick(clock.now), partition)
    clock.now = MONDAY.replace(hour=9, minute=1)
    await agent.handle(inbox.Tick(clock.now), partition)
    [email] = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]
    returned = email.requests
    failure = inbox.EmailFailed(7, email.email_key, returned, Undeliverable("praxis7@example.org", "550 5.1.1", 42))
    await agent.handle(failure, partition)

    [suppressed] = [e for e in events(agent) if e["event_type"] == "communication.email_suppressed"]
    assert "praxis7@example.org" not in json.dumps(suppressed)
    assert suppressed["payload"]["email_id"] == 42  # type: ignore[index]
    calls = [c for c in commands(agent) if isinstance(c, send_commands.BookCall)]
    assert [[r.placement_request_id for r in c.requests] for c in calls] == [[1]]
    stored = table[7]
    assert isinstance(stored, TherapistState)
    assert stored.suppression is not None


async def test_an_event_that_would_grow_the_state_too_large_is_refused_before_anything_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, table, _ = agent_at()
    partition = partition_of(7, PARTITIONS)
    await agent.handle(match(1, 7, 30), partition)
    published = len(commands(agent))
    monkeypatch.setattr(therapist_agent, "MEASURE_ABOVE", 0)
    monkeypatch.setattr(therapist_agent, "MAX_STATE_BYTES", 100)

    with pytest.raises(StateTooLarge):
        await agent.handle(match(2, 7, 30), partition)
    assert len(commands(agent)) == published
    stored = table[7]
    assert isinstance(stored, TherapistState)
    assert list(stored.pending) == [1]


async def test_a_message_it_cannot_handle_goes_to_the_dlq_and_the_stream_goes_on() -> None:
    agent, table, _ = agent_at()
    good = encode(match(1, 7, 30))
    records = [
        Record(b'{"kind": "no_such_kind", "therapist_id": 7}', b"7", "svc-therapist-inbox", 0, 10),
        Record(b"not json", b"7", "svc-therapist-inbox", 0, 11),
        Record(good, b"7", "svc-therapist-inbox", 0, 12),
    ]
    await agent(RecordStream(records))  # type: ignore[arg-type]

    dead = [json.loads(s.value) for s in sent(agent.topics.dlq)]
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (10, "internal error: UnknownMessage"),
        (11, "internal error: JSONDecodeError"),
    ]
    assert dead[0]["value"] == '{"kind": "no_such_kind", "therapist_id": 7}'
    stored = table[7]
    assert isinstance(stored, TherapistState)
    assert list(stored.pending) == [1]


# -- rules the end-to-end tests see by letting real time pass, here with `now` passed in


async def emailed_at_first_run(agent: TherapistAgent, clock: FakeClock, therapist_id: int) -> send_commands.SendEmail:
    partition = partition_of(therapist_id, PARTITIONS)
    await agent.handle(upserted(therapist_id), partition)
    await agent.handle(match(therapist_id * 10, therapist_id, 30), partition)
    await agent.handle(inbox.Tick(clock.now), partition)
    clock.now = MONDAY.replace(hour=9, minute=1)
    await agent.handle(inbox.Tick(clock.now), partition)
    [email] = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]
    return email


async def test_a_worker_taking_over_a_partition_does_not_repeat_its_run() -> None:
    first, table, clock = agent_at()
    await emailed_at_first_run(first, clock, 7)
    # A rebalance: another worker recovers the same table and ticks the partition.
    second = TherapistAgent(SETTINGS, recording_topics(), table, clock)  # type: ignore[arg-type]
    clock.now += timedelta(minutes=5)
    await second.handle(inbox.Tick(clock.now), partition_of(7, PARTITIONS))
    assert commands(second) == []


async def test_runs_missed_while_no_worker_ran_happen_once_at_the_next_tick() -> None:
    agent, table, clock = agent_at()
    email = await emailed_at_first_run(agent, clock, 7)
    partition = partition_of(7, PARTITIONS)
    await agent.handle(inbox.EmailSent(7, email.email_key, True, clock.now), partition)
    await agent.handle(match(71, 7, 1), partition)
    # Down from Monday until Thursday of the following week, 10:00: three runs after
    # the window (Tuesday to Thursday 09:00) were missed; one email catches up.
    clock.now = MONDAY.replace(hour=10) + timedelta(days=10)
    await agent.handle(inbox.Tick(clock.now), partition)
    await agent.handle(inbox.Tick(clock.now + timedelta(seconds=1)), partition)
    later = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)][1:]
    assert [[r.placement_request_id for r in e.requests] for e in later] == [[71]]
    bookmark = table[bookmark_key(partition)]
    assert isinstance(bookmark, dict)
    assert datetime.fromisoformat(bookmark["last_run"]) == clock.now.replace(hour=9)


async def test_a_follow_up_email_is_decided_at_once_and_holds_the_window_while_in_flight() -> None:
    agent, _, clock = agent_at()
    email = await emailed_at_first_run(agent, clock, 7)
    partition = partition_of(7, PARTITIONS)
    await agent.handle(inbox.EmailSent(7, email.email_key, True, clock.now), partition)
    clock.now += timedelta(days=7, minutes=5)  # COMM_FOLLOW_UP_AFTER later, unanswered
    follow_up = inbox.FollowUpEmail(7, 42, clock.now - timedelta(days=7), email.requests)
    await agent.handle(follow_up, partition)
    [decided] = [c for c in commands(agent) if isinstance(c, send_commands.SendEmail)][1:]
    assert (decided.email_kind, decided.template, decided.limited) == ("follow_up", "follow_up", True)
    assert [r.placement_request_id for r in decided.requests] == [70]

    await agent.handle(match(72, 7, 1), partition)
    clock.now += timedelta(days=1)
    await agent.handle(inbox.Tick(clock.now), partition)  # in flight: no contact email beside it
    assert len([c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]) == 2
    await agent.handle(follow_up, partition)  # a replay decides nothing again
    assert len([c for c in commands(agent) if isinstance(c, send_commands.SendEmail)]) == 2
