"""The therapist agent on batches and bundles of inbox messages: each therapist's
state read and written once, everything published and acknowledged before any state
is written, and a message that cannot be applied refused alone."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from domain.therapist_state import TherapistState
from streams.agents import therapist as therapist_agent
from streams.agents.inbox_items import across_partitions
from streams.agents.therapist import StateTooLarge, TherapistAgent
from streams.agents.ticks import partition_of
from streams.messages import inbox, send_commands
from streams.messages.bundles import Entry, pack
from streams.messages.codec import encode
from streams.ops.metrics import Outcome
from tests.fakes import FakeClock, Record, RecordingMetrics, RecordStream, recording_topics, sent
from tests.unit.test_therapist_agent import MONDAY, PARTITIONS, SETTINGS, match, therapist_on, upserted

INBOX = "svc-therapist-inbox"


class CountingTable(dict[Any, Any]):
    """A dict as the table, counting the writes of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[Any, int] = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        self.writes[key] = self.writes.get(key, 0) + 1
        super().__setitem__(key, value)


def agent() -> tuple[TherapistAgent, CountingTable, RecordingMetrics]:
    table, metrics = CountingTable(), RecordingMetrics()
    return TherapistAgent(SETTINGS, recording_topics(), table, FakeClock(MONDAY), metrics=metrics), table, metrics  # type: ignore[arg-type]


def bundle(*messages: inbox.MatchCreated | inbox.TherapistUpserted, offset: int = 5) -> Record:
    """One inbox record holding ``messages`` (all of one partition)."""
    partitions = {partition_of(m.therapist_id, PARTITIONS) for m in messages}
    [partition] = partitions
    [packed] = pack([Entry(partition, b"%d" % m.therapist_id, encode(m), None) for m in messages])
    return Record(packed.value, packed.key, INBOX, partition, offset)


def commands_sent(agent: TherapistAgent) -> list[list[send_commands.SendCommand]]:
    """The commands of each send-commands record."""
    return [list(send_commands.unpack(s.value)) for s in sent(agent.topics.send_commands)]


def pending(table: CountingTable, therapist_id: int) -> list[int]:
    state = table[therapist_id]
    assert isinstance(state, TherapistState)
    return list(state.pending)


A = therapist_on(1)
B = therapist_on(1, after=A)


async def test_a_bundle_writes_each_therapist_once_and_sends_its_commands_in_one_record() -> None:
    agent_, table, metrics = agent()
    stream = RecordStream([bundle(match(1, A, 30), match(2, B, 20), match(3, A, 10), match(4, A, 5))])
    await agent_(stream)  # type: ignore[arg-type]

    assert pending(table, A) == [1, 3, 4] and pending(table, B) == [2]
    assert table.writes == {A: 1, B: 1}
    [record] = commands_sent(agent_)  # one record for the partition, in the messages' order per therapist
    assert [(c.therapist_id, c.request.placement_request_id) for c in record] == [(A, 1), (A, 3), (A, 4), (B, 2)]  # type: ignore[union-attr]
    assert metrics.of("input_event") == {("matching-events", Outcome.ACCEPTED): 4}
    assert [r.offset for r in stream.acked] == [5]


async def test_nothing_is_written_or_acknowledged_before_the_broker_acknowledged_the_decisions() -> None:
    agent_, table, _ = agent()
    agent_.topics.send_commands.hold = True  # type: ignore[attr-defined]
    stream = RecordStream([bundle(match(1, A, 30), match(2, B, 20))])
    running = asyncio.create_task(agent_(stream))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent(agent_.topics.send_commands) and table.writes == {} and stream.acked == []

    agent_.topics.send_commands.release()  # type: ignore[attr-defined]
    await running
    assert table.writes == {A: 1, B: 1} and [r.offset for r in stream.acked] == [5]


async def test_a_message_that_would_grow_the_state_too_large_is_refused_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    check = therapist_agent._check_size

    def at_most_one_more(state: TherapistState) -> None:
        if state.therapist_id == A and 2 in state.pending:
            raise StateTooLarge(f"therapist {A}'s state would grow too large")
        check(state)

    monkeypatch.setattr(therapist_agent, "_check_size", at_most_one_more)
    agent_, table, metrics = agent()
    refused = match(2, A, 20)
    await agent_(RecordStream([bundle(match(1, A, 30), refused, match(3, A, 10), match(4, B, 5))]))  # type: ignore[arg-type]

    assert pending(table, A) == [1, 3] and pending(table, B) == [4]
    [dead] = [json.loads(s.value) for s in sent(agent_.topics.dlq)]
    assert (dead["source_topic"], dead["offset"], dead["key"]) == (INBOX, 5, str(A))
    assert dead["value"] == encode(refused).decode()  # the message alone, to read and fix
    assert dead["event_id"] == "m-2" and "would grow too large" in dead["reason"]
    assert metrics.of("input_event") == {
        ("matching-events", Outcome.ACCEPTED): 3,
        ("matching-events", Outcome.REJECTED): 1,
    }


async def test_a_failure_in_one_therapists_message_loses_none_of_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    agent_, table, metrics = agent()
    apply = agent_.apply

    def failing_for_b(state: TherapistState, message: inbox.InboxMessage, now: Any) -> Any:
        if state.therapist_id == B:
            raise KeyError("a bug")
        return apply(state, message, now)

    monkeypatch.setattr(agent_, "apply", failing_for_b)
    await agent_(RecordStream([bundle(match(1, A, 30), match(2, B, 20), match(3, A, 10))]))  # type: ignore[arg-type]

    assert pending(table, A) == [1, 3] and B not in table
    [dead] = [json.loads(s.value) for s in sent(agent_.topics.dlq)]
    assert dead["reason"] == "internal error: KeyError" and dead["key"] == str(B)
    assert metrics.of("input_event")[("matching-events", Outcome.ERROR)] == 1


async def test_a_replayed_bundle_changes_nothing() -> None:
    agent_, table, metrics = agent()
    record = bundle(upserted(A), match(1, A, 30), match(2, B, 20))
    await agent_(RecordStream([record]))  # type: ignore[arg-type]
    before = {key: value.copy() for key, value in table.items()}

    await agent_(RecordStream([record]))  # type: ignore[arg-type]
    assert table == before
    assert metrics.of("input_event")[("matching-events", Outcome.DUPLICATE)] == 2
    assert metrics.of("input_event")[("therapist-events", Outcome.DUPLICATE)] == 1


async def test_a_bundle_message_of_another_partitions_therapist_is_refused() -> None:
    agent_, table, _ = agent()
    stranger = match(9, therapist_on(2), 10)
    good = bundle(match(1, A, 30), match(2, B, 20))
    value = good.value.replace(b"]}", b"," + encode(stranger) + b"]}")  # type: ignore[union-attr]
    await agent_(RecordStream([Record(value, None, INBOX, good.partition, 5)]))  # type: ignore[arg-type]

    assert pending(table, A) == [1] and stranger.therapist_id not in table
    [dead] = [json.loads(s.value) for s in sent(agent_.topics.dlq)]
    assert dead["reason"] == "internal error: ValueError" and dead["value"] == encode(stranger).decode()


async def test_messages_before_a_tick_in_a_batch_are_applied_before_its_batch_run() -> None:
    agent_, table, _ = agent()
    partition = partition_of(A, PARTITIONS)
    first = inbox.Tick(MONDAY)  # the first tick only sets the partition's bookmark
    await agent_.handle(first, partition)
    tick = encode(inbox.Tick(MONDAY.replace(hour=9, minute=1)))
    records = [bundle(upserted(A), match(1, A, 30), offset=6), Record(tick, None, INBOX, partition, 7)]
    agent_.clock.now = MONDAY.replace(hour=9, minute=1)  # type: ignore[attr-defined]
    await agent_(RecordStream(records))  # type: ignore[arg-type]

    emails = [c for record in commands_sent(agent_) for c in record if isinstance(c, send_commands.SendEmail)]
    assert [[r.placement_request_id for r in e.requests] for e in emails] == [[1]]
    assert pending(table, A) == []


def test_a_batchs_table_writes_take_the_partitions_in_turn() -> None:
    def on(partition: int) -> Any:
        return SimpleNamespace(message=SimpleNamespace(partition=partition))

    writes = {1: ("a", on(0)), 2: ("b", on(0)), 3: ("c", on(0)), 4: ("d", on(2)), 5: ("e", on(2)), 6: ("f", on(1))}
    assert [therapist for therapist, _ in across_partitions(writes)] == [1, 4, 6, 2, 5, 3]
