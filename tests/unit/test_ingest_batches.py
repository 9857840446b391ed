"""The ingest agents take inputs in batches: one inbox record per partition per
batch, a batch taken only once the broker acknowledged its records (the input
consumer commits it then: streams.agents.ingest_consumer), and a record the broker
refuses for good sends its inputs to the DLQ."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from aiokafka.errors import MessageSizeTooLargeError

from streams.agents.ingest import matching_ingest
from streams.messages import inbox
from streams.messages.bundles import Bundle, partition_of
from streams.settings import Settings
from tests.events import encode, match_created
from tests.fakes import Record, recording_topics, sent, taken

SETTINGS = Settings.from_environ({"COMM_PARTITIONS": "4"})
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def therapist_on(partition: int, after: int = 0) -> int:
    return next(t for t in range(after + 1, 10_000) if partition_of(t, 4) == partition)


def records(*matches: tuple[int, int]) -> list[Record]:
    """match.created inputs, (request, therapist) each, at consecutive offsets."""
    return [
        Record(encode(match_created(r, t, "2026-09-01T10:00:00+02:00")), b"%d" % r, "matching-events", 0, n)
        for n, (r, t) in enumerate(matches)
    ]


def forwarded(topics: object) -> list[tuple[int | None, list[int]]]:
    """Each inbox record's partition and the requests of its messages."""
    out = []
    for s in sent(topics.inbox):  # type: ignore[attr-defined]
        record = inbox.decode_record(s.value)
        messages = record.messages if isinstance(record, Bundle) else (record,)
        out.append((s.partition, [m.request.placement_request_id for m in messages]))  # type: ignore[union-attr]
    return out


async def test_a_batch_sends_one_inbox_record_per_partition_with_its_messages_in_order() -> None:
    a, b = therapist_on(1), therapist_on(3)
    c = therapist_on(1, after=a)
    topics = recording_topics()
    await matching_ingest(topics, clock, SETTINGS).take(taken(records((1, a), (2, b), (3, c), (4, a), (5, b))))

    assert forwarded(topics) == [(1, [1, 3, 4]), (3, [2, 5])]


async def test_a_batch_is_taken_only_once_the_broker_acknowledged_its_records() -> None:
    topics = recording_topics()
    topics.inbox.hold = True  # type: ignore[attr-defined]
    running = asyncio.create_task(matching_ingest(topics, clock, SETTINGS).take(taken(records((1, 7), (2, 8)))))
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent(topics.inbox) and not running.done()

    topics.inbox.release()  # type: ignore[attr-defined]
    await asyncio.wait_for(running, 5)


async def test_a_record_the_broker_refuses_for_good_dead_letters_its_inputs_and_the_others_go_on() -> None:
    a, b = therapist_on(0), therapist_on(2)
    topics = recording_topics()
    refused_partition = partition_of(a, 4)

    def refuse(value: bytes) -> BaseException | None:
        record = inbox.decode_record(value)
        messages = record.messages if isinstance(record, Bundle) else (record,)
        on = {partition_of(m.therapist_id, 4) for m in messages}  # type: ignore[union-attr]
        return MessageSizeTooLargeError() if refused_partition in on else None

    topics.inbox.refuse = refuse  # type: ignore[attr-defined]
    await matching_ingest(topics, clock, SETTINGS).take(taken(records((1, a), (2, b), (3, a))))

    dead = [json.loads(s.value) for s in sent(topics.dlq)]
    assert [d["offset"] for d in dead] == [0, 2]
    assert all(d["reason"].startswith("internal error: the broker refused") for d in dead)
