"""The input consumer's part, against a fake aiokafka consumer: each read goes to the
ingest agent of its topic, and its offsets are committed only once the broker
acknowledged what the read caused. (On Tansu: every e2e test reads its inputs so;
tests/e2e/test_batched_ingest.py kills a worker in the middle of a batch.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from streams.agents import ingest_consumer
from streams.agents.ingest import matching_ingest, therapist_ingest
from streams.agents.ingest_consumer import IngestConsumer
from streams.kafka.topics import ingest_group
from streams.settings import Settings
from tests.events import encode, therapist_created
from tests.fakes import Record, recording_topics, sent
from tests.unit.test_ingest_batches import SETTINGS, clock, records

MATCHING = TopicPartition("matching-events", 0)
THERAPISTS = TopicPartition("therapist-events", 0)


class FakeConsumer:
    """getmany answers the reads given, then waits for the test to stop the loop."""

    def __init__(self, owner: IngestConsumer, *reads: dict[TopicPartition, list[Record]], refuse: bool = False):
        self.owner = owner
        self.reads = list(reads)
        self.refuse = refuse
        self.commits: list[dict[TopicPartition, int]] = []
        self.sent_before_commit: list[int] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
        if not self.reads:
            self.owner._stopped.set()  # mode's flag: the loop ends
            return {}
        return self.reads.pop(0)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.sent_before_commit.append(len(sent(self.owner.agents["matching-events"].topics.inbox)))
        if self.refuse:
            raise CommitFailedError("the group rebalanced")
        self.commits.append(offsets)


def consumer_of(topics: Any) -> IngestConsumer:
    agents = {
        "matching-events": matching_ingest(topics, clock, SETTINGS),
        "therapist-events": therapist_ingest(topics, clock, SETTINGS),
    }
    return IngestConsumer(SETTINGS, agents)


async def test_each_read_goes_to_the_agent_of_its_topic_and_is_committed_after_it_was_forwarded() -> None:
    topics = recording_topics()
    inputs = consumer_of(topics)
    upserted = therapist_created(7)
    upserted["occurred_at"] = clock().isoformat()  # the agents' clock
    therapist = Record(encode(upserted), b"7", THERAPISTS.topic, 0, 0)
    first = {MATCHING: records((1, 7), (2, 8)), THERAPISTS: [therapist]}
    second = {MATCHING: [Record(r.value, r.key, MATCHING.topic, 0, 2) for r in records((3, 7))]}
    fake = FakeConsumer(inputs, first, second)

    await inputs._read(fake)  # type: ignore[arg-type]

    assert fake.commits == [{MATCHING: 2, THERAPISTS: 1}, {MATCHING: 3}]  # the next offset to read
    total = len(sent(topics.inbox))
    assert fake.sent_before_commit == [total - 1, total]  # each commit after its read's inbox records
    kinds = [s.value for s in sent(topics.inbox)]
    assert any(b"therapist_upserted" in value for value in kinds) and inputs.read == 4


async def test_nothing_is_committed_before_the_broker_acknowledged_the_inbox_records() -> None:
    topics = recording_topics()
    topics.inbox.hold = True  # type: ignore[attr-defined]
    inputs = consumer_of(topics)
    fake = FakeConsumer(inputs, {MATCHING: records((1, 7), (2, 8))})
    reading = asyncio.create_task(inputs._read(fake))  # type: ignore[arg-type]
    while not sent(topics.inbox):
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert fake.commits == []  # the inbox record is out, not acknowledged

    topics.inbox.release()  # type: ignore[attr-defined]
    await reading
    assert fake.commits == [{MATCHING: 2}]


async def test_a_commit_refused_by_a_rebalance_leaves_the_read_to_the_next_owner_and_reading_goes_on() -> None:
    topics = recording_topics()
    inputs = consumer_of(topics)
    fake = FakeConsumer(inputs, {MATCHING: records((1, 7))}, {MATCHING: records((2, 8))}, refuse=True)

    await inputs._read(fake)  # type: ignore[arg-type]

    assert fake.commits == [] and len(fake.sent_before_commit) == 2  # both reads were forwarded


def test_the_inputs_have_a_group_of_their_own_beside_fausts() -> None:
    settings = Settings.from_environ({"COMM_APP_ID": "svc-a"})
    assert ingest_group(settings) == "svc-a-ingest"


async def test_the_inputs_are_caught_up_once_a_read_since_joining_comes_back_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_consumer, "BATCH", 2)
    topics = recording_topics()
    inputs = consumer_of(topics)
    inputs.note_joined()
    states = []

    class Watching(FakeConsumer):
        async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Record]]:
            states.append(inputs.caught_up)
            return await super().getmany(timeout_ms, max_records)

    full, short = records((1, 7), (2, 8)), [Record(r.value, r.key, MATCHING.topic, 0, 2) for r in records((3, 7))]
    await inputs._read(Watching(inputs, {MATCHING: full}, {MATCHING: short}))  # type: ignore[arg-type]

    assert states == [False, False, True]  # a full read may leave more waiting; a short one does not


async def test_a_broker_failure_while_reading_connects_again_and_the_read_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ingest_consumer, "RECONNECT_PAUSE", 0)
    topics = recording_topics()
    inputs = consumer_of(topics)
    batch = {MATCHING: records((1, 7))}

    class Failing(FakeConsumer):
        started = stopped = 0

        async def start(self) -> None:
            Failing.started += 1

        async def stop(self) -> None:
            Failing.stopped += 1

        def subscribe(self, topics: list[str], listener: Any) -> None:
            assert sorted(topics) == ["matching-events", "therapist-events"]

        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            if Failing.started == 1:
                raise KafkaConnectionError("the coordinator went away")
            await super().commit(offsets)

    consumers = [Failing(inputs, batch), Failing(inputs, batch)]
    monkeypatch.setattr(inputs, "_consumer", lambda: consumers.pop(0))
    await inputs._consume(inputs)  # mode's Service.task, called as the service would

    assert (Failing.started, Failing.stopped) == (2, 2)  # connected again, each consumer stopped
    assert consumers == [] and len(sent(topics.inbox)) == 2  # the uncommitted read was forwarded again
