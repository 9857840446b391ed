"""The buffer of table writes waiting for Faust's producer
(streams.kafka.changelog_buffer): the backlog limit, and one lane per topic
partition, so that a write is never held behind another partition's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from streams.kafka import app as kafka_app
from streams.kafka.changelog_buffer import CHANGELOG_BACKLOG, ChangelogBuffer
from streams.settings import Settings

CHANGELOG = object()  # two channels (topics); only their identity matters here
COMMANDS = object()


@pytest.fixture
def app() -> kafka_app.ServiceFaustApp:
    return kafka_app.create_app(Settings.from_environ({"COMM_PARTITIONS": "4"}))


class Write(asyncio.Future[str]):
    """A table write as Faust buffers it (a FutureMessage), partitioned eagerly."""

    def __init__(self, channel: object, partition: int, name: str, key: Any = None) -> None:
        super().__init__()
        self.name = name
        self.called_back: list[str] = []
        self.message = SimpleNamespace(
            channel=channel,
            partition=partition,
            key=name if key is None else key,
            key_serializer=None,
            callback=lambda done: self.called_back.append(done.result()),
        )


class Producer:
    """Stands in for aiokafka behind the buffer: a write to a "busy" partition is
    held until the test frees it, as aiokafka holds a record while the batch before
    it on its partition waits to be sent (one record per batch)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.started: list[str] = []
        self.busy: dict[tuple[object, int], asyncio.Event] = {}
        self.changed = asyncio.Condition()

    def hold(self, channel: object, partition: int) -> None:
        self.busy[(channel, partition)] = asyncio.Event()

    def free(self, channel: object, partition: int) -> None:
        self.busy.pop((channel, partition)).set()

    async def send(self, future: Any) -> None:
        gate = self.busy.get((future.message.channel, future.message.partition))
        async with self.changed:
            self.started.append(future.name)
            self.changed.notify_all()
        if gate is not None:
            await gate.wait()
        async with self.changed:
            self.sent.append(future.name)
            self.changed.notify_all()
        future.set_result(f"offset of {future.name}")  # as Faust's Topic._on_published does
        future.message.callback(future)

    async def until_sent(self, *names: str) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: set(names) <= set(self.sent)), 5)

    async def until_started(self, name: str) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: name in self.started), 5)


async def sorted_into_lanes(buffer: ChangelogBuffer) -> None:
    while buffer.pending.qsize():
        await asyncio.sleep(0)  # the buffer's task takes the next write


@pytest.fixture
async def running(app: kafka_app.ServiceFaustApp, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    buffer = app.producer.buffer
    producer = Producer()
    monkeypatch.setattr(buffer, "_send_pending", producer.send)
    await buffer.start()
    try:
        yield buffer, producer
    finally:
        for gate in producer.busy.values():
            gate.set()
        await buffer.stop()


def test_the_app_buffers_its_table_writes_in_the_changelog_buffer(app: kafka_app.ServiceFaustApp) -> None:
    assert isinstance(app.producer.buffer, ChangelogBuffer)
    assert app.producer.buffer.app is app


async def test_a_write_is_not_held_behind_a_write_waiting_for_another_partition(running: Any) -> None:
    buffer, producer = running
    producer.hold(CHANGELOG, 0)
    for future in (Write(CHANGELOG, 0, "a1"), Write(CHANGELOG, 0, "a2"), Write(CHANGELOG, 1, "b1")):
        buffer.pending.put_nowait(future)
    # Faust's own buffer sends one write after the other: b1 would wait for a1.
    await producer.until_sent("b1")
    assert producer.sent == ["b1"]
    assert buffer.size == 2  # a1 in the producer's hands, a2 behind it: both still wait

    producer.free(CHANGELOG, 0)
    await producer.until_sent("a1", "a2")
    assert producer.sent == ["b1", "a1", "a2"]  # a partition's writes in the order written
    assert buffer.size == 0


async def test_each_topic_has_lanes_of_its_own(running: Any) -> None:
    buffer, producer = running
    producer.hold(CHANGELOG, 2)
    buffer.pending.put_nowait(Write(CHANGELOG, 2, "changelog"))
    buffer.pending.put_nowait(Write(COMMANDS, 2, "command"))  # the same partition number
    await producer.until_sent("command")
    assert producer.sent == ["command"]
    producer.free(CHANGELOG, 2)
    await producer.until_sent("changelog")


async def test_a_flush_waits_for_the_writes_in_the_lanes(running: Any) -> None:
    buffer, producer = running
    producer.hold(CHANGELOG, 3)
    buffer.pending.put_nowait(Write(CHANGELOG, 3, "held"))
    await producer.until_started("held")
    flushed = asyncio.ensure_future(buffer.flush_atmost(1))
    await asyncio.sleep(0)  # the flush waits for a write to go out
    assert not flushed.done()
    producer.free(CHANGELOG, 3)
    assert await asyncio.wait_for(flushed, 5) == 1
    assert buffer.size == 0


async def test_a_waiting_write_is_replaced_by_a_newer_write_of_its_key(running: Any) -> None:
    buffer, producer = running
    producer.hold(CHANGELOG, 0)
    first = Write(CHANGELOG, 0, "first", key=7)
    buffer.pending.put_nowait(first)
    await producer.until_started("first")  # in the producer's hands: it goes as it is
    older, other, newer = (
        Write(CHANGELOG, 0, "older", 7),
        Write(CHANGELOG, 0, "other", 8),
        Write(CHANGELOG, 0, "newer", 7),
    )
    for future in (older, other, newer):
        buffer.pending.put_nowait(future)
    await asyncio.wait_for(sorted_into_lanes(buffer), 5)
    assert buffer.size == 3  # first, other, newer: older is replaced
    assert buffer.replaced == 1

    producer.free(CHANGELOG, 0)
    await producer.until_sent("first", "other", "newer")
    assert producer.sent == ["first", "newer", "other"]  # in the older write's place
    # Whoever waits for the older write waits for the newer one, and its callback
    # (Faust records the changelog offset there) sees the newer write's result.
    assert await asyncio.wait_for(older, 5) == "offset of newer"
    assert older.called_back == ["offset of newer"]
    assert buffer.size == 0


async def test_writes_of_other_keys_partitions_or_topics_are_not_replaced(running: Any) -> None:
    buffer, producer = running
    producer.hold(CHANGELOG, 1)
    buffer.pending.put_nowait(Write(CHANGELOG, 1, "in hand", key=1))
    await producer.until_started("in hand")
    for future in (
        Write(CHANGELOG, 1, "key 2", key=2),
        Write(CHANGELOG, 1, "key 3", key=3),
        Write(COMMANDS, 1, "other topic", key=2),
        Write(CHANGELOG, 1, "unhashable", key=[2]),
        Write(CHANGELOG, 1, "unhashable again", key=[2]),
    ):
        buffer.pending.put_nowait(future)
    await producer.until_sent("other topic")
    producer.free(CHANGELOG, 1)
    await producer.until_sent("key 2", "key 3", "unhashable", "unhashable again")
    assert buffer.replaced == 0


async def test_a_burst_of_table_writes_waiting_for_the_producer_does_not_hold_up_every_agent(
    app: kafka_app.ServiceFaustApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Faust stops handing records to all agents while more than max_messages table
    # writes wait for its producer; with one record per producer batch (Tansu) a batch
    # run's writes passed Faust's 100 at once and held up a confirmation for seconds.
    buffer = app.producer.buffer
    for _ in range(1000):  # a batch run's writes, and the delivery feedback's
        buffer.pending.put_nowait(object())
    waited: list[int | None] = []

    async def flush_atmost(max_messages: int | None) -> int:
        waited.append(max_messages)
        return 0

    monkeypatch.setattr(buffer, "flush_atmost", flush_atmost)
    await buffer.wait_until_ebb()  # what Faust awaits before handing on each record

    assert waited == []
    assert buffer.max_messages == CHANGELOG_BACKLOG


async def test_above_the_limit_a_record_waits_only_until_the_pending_writes_are_back_at_it(
    app: kafka_app.ServiceFaustApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = app.producer.buffer
    for _ in range(CHANGELOG_BACKLOG + 5):
        buffer.pending.put_nowait(object())
    waited: list[int | None] = []

    async def flush_atmost(max_messages: int | None) -> int:  # the producer sends that many
        waited.append(max_messages)
        for _ in range(max_messages or 0):
            buffer.pending.get_nowait()
        return max_messages or 0

    monkeypatch.setattr(buffer, "flush_atmost", flush_atmost)
    await buffer.wait_until_ebb()

    assert waited == [5]  # Faust's own would wait for CHANGELOG_BACKLOG more to go
    assert buffer.size == CHANGELOG_BACKLOG
