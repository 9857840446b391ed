"""The consumer fetches again whatever a rebalance stops a batch from handing on
(streams/kafka/rewinding_consumer.py); the end-to-end scale-out test shows it on the broker."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from streams.kafka.rewinding_consumer import RewindingConsumer, rewind_plan

Record = namedtuple("Record", "offset")
CHANGELOG = TP("app-therapists-changelog", 2)
INBOX = TP("app-therapist-inbox", 0)


def records(tp: TP, first: int, last: int) -> list[Record]:
    return [Record(offset) for offset in range(first, last + 1)]


def test_nothing_to_do_when_everything_was_handed_on():
    assert rewind_plan({INBOX: records(INBOX, 5, 9)}, {INBOX: 5}, {}) == ({}, {})


def test_a_batch_cut_short_goes_back_to_its_first_record_not_handed_on():
    batch = {INBOX: records(INBOX, 5, 9), CHANGELOG: records(CHANGELOG, 0, 3)}
    assert rewind_plan(batch, {INBOX: 2}, {}) == ({INBOX: 7, CHANGELOG: 0}, {})


def test_a_seek_during_the_batch_wins_when_it_is_earlier():
    batch = {INBOX: records(INBOX, 30, 39)}
    assert rewind_plan(batch, {INBOX: 4}, {INBOX: 12}) == ({INBOX: 12}, {})
    assert rewind_plan(batch, {INBOX: 4}, {INBOX: 36}) == ({INBOX: 34}, {})


def test_a_sought_partition_with_nothing_left_gets_its_read_offset_back():
    batch = {INBOX: records(INBOX, 30, 39)}
    assert rewind_plan(batch, {INBOX: 10}, {INBOX: 12, CHANGELOG: 0}) == ({}, {INBOX: 12, CHANGELOG: 0})


class FakeThread:
    """The consumer thread: seeks are recorded instead of sent to aiokafka."""

    def __init__(self) -> None:
        self.seeks: list[dict[TP, int]] = []
        self.committed: dict[TP, int | None] = {}
        self.fail_with: Exception | None = None
        self.release_committed_seek = asyncio.Event()
        self.release_committed_seek.set()

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.seeks.append(dict(partitions))

    async def seek_to_committed(self) -> dict[TP, int | None]:
        await self.release_committed_seek.wait()
        self.seeks.append({tp: offset for tp, offset in self.committed.items() if offset})
        return self.committed


class Harness:
    """A RewindingConsumer without Faust's machinery: a batch to return, and a
    consumer thread that records the seeks."""

    def __init__(
        self, batch: dict[TP, list[Record]], *, flow_active: bool = True, paused: frozenset[TP] = frozenset()
    ) -> None:
        consumer: Any = RewindingConsumer.__new__(RewindingConsumer)
        consumer._seeks = 0
        consumer._sought = {}
        consumer._committed_seeks = 0
        consumer._no_committed_seek = asyncio.Event()
        consumer._no_committed_seek.set()
        consumer._read_offset = {}
        consumer._buffered_partitions = set()
        consumer._stopped = asyncio.Event()
        consumer._crashed = asyncio.Event()
        consumer.flow_active = flow_active
        consumer.scheduler = DefaultSchedulingStrategy()
        consumer.app = SimpleNamespace(
            consumer_generation_id=1, monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None)
        )
        consumer.highwater = lambda tp: 100
        consumer._to_message = lambda tp, record: record
        consumer.assignment = lambda: set(batch)
        consumer._thread = self.thread = FakeThread()

        async def next_records(timeout: float) -> tuple[dict[TP, list[Record]], set[TP]]:
            return batch, set(batch) - paused

        consumer._wait_next_records = next_records
        self.consumer = consumer

    @property
    def sent_seeks(self) -> list[dict[TP, int]]:
        return self.thread.seeks


async def test_a_batch_that_outlives_a_seek_stops_and_is_fetched_from_the_seek_target():
    harness = Harness({CHANGELOG: records(CHANGELOG, 30, 39)})
    handed: list[int] = []
    async for tp, record in harness.consumer.getmany(timeout=1.0):
        handed.append(record.offset)
        harness.consumer._read_offset[tp] = record.offset  # what Faust's fetch loop does
        if record.offset == 32:
            await harness.consumer.seek_wait({CHANGELOG: 0})  # the table recovery seeks to the start
    assert handed == [30, 31, 32]
    assert harness.sent_seeks == [{CHANGELOG: 0}, {CHANGELOG: 0}]


async def test_records_fetched_while_the_flow_is_stopped_are_fetched_again():
    harness = Harness({INBOX: records(INBOX, 7, 9), CHANGELOG: records(CHANGELOG, 0, 39)}, flow_active=False)
    handed = [record async for _, record in harness.consumer.getmany(timeout=1.0)]
    assert handed == []
    assert harness.sent_seeks == [{INBOX: 7, CHANGELOG: 0}]


async def test_a_seek_while_the_last_record_was_handled_puts_the_read_offset_back():
    harness = Harness({INBOX: records(INBOX, 7, 9)})
    async for tp, record in harness.consumer.getmany(timeout=1.0):
        if record.offset == 9:
            harness.thread.committed = {INBOX: 4, CHANGELOG: None}
            await harness.consumer.seek_to_committed()  # Faust's seek to committed offsets
        harness.consumer._read_offset[tp] = record.offset
    assert harness.consumer._read_offset[INBOX] == 4  # not 9: offsets 4..8 must not be dropped
    assert harness.sent_seeks == [{INBOX: 4}]  # and no rewind: nothing was left over


async def test_an_undisturbed_batch_is_handed_on_whole_without_seeks():
    harness = Harness({INBOX: records(INBOX, 7, 9), CHANGELOG: records(CHANGELOG, 0, 1)})
    handed = [record.offset async for _, record in harness.consumer.getmany(timeout=1.0)]
    assert sorted(handed) == [0, 1, 7, 8, 9]
    assert harness.sent_seeks == []


async def test_a_new_generation_cuts_the_batch_short_and_the_rest_is_fetched_again():
    harness = Harness({INBOX: records(INBOX, 7, 9)})
    handed = []
    async for _, record in harness.consumer.getmany(timeout=1.0):
        handed.append(record.offset)
        harness.consumer.app.consumer_generation_id = 2  # a rebalance began
    assert handed == [7]
    assert harness.sent_seeks == [{INBOX: 8}]


async def test_records_of_paused_partitions_are_skipped_as_in_faust():
    harness = Harness({INBOX: records(INBOX, 7, 8), CHANGELOG: records(CHANGELOG, 0, 1)}, paused=frozenset({CHANGELOG}))
    handed = [(tp, record.offset) async for tp, record in harness.consumer.getmany(timeout=1.0)]
    assert handed == [(INBOX, 7), (INBOX, 8)]
    assert harness.sent_seeks == []


async def test_a_failed_rewind_is_logged_and_the_fetch_loop_goes_on(caplog):
    harness = Harness({INBOX: records(INBOX, 7, 9)}, flow_active=False)
    harness.thread.fail_with = RuntimeError("No current assignment for partition")
    handed = [record async for _, record in harness.consumer.getmany(timeout=1.0)]
    assert handed == []
    assert "could not rewind an interrupted batch (RuntimeError)" in caplog.text


async def test_a_rewind_waits_for_a_seek_to_committed_offsets_in_progress():
    """aiokafka says where that seek went only when it is done; a rewind that did
    not wait could move the partition past the committed offset."""
    harness = Harness({INBOX: records(INBOX, 30, 39)})
    harness.thread.committed = {INBOX: 12}
    harness.thread.release_committed_seek.clear()
    committed_seek = None
    handed = []
    async for _, record in harness.consumer.getmany(timeout=1.0):
        handed.append(record.offset)
        committed_seek = asyncio.ensure_future(harness.consumer.seek_to_committed())
        await asyncio.sleep(0)  # the seek has begun: the batch must notice it
        asyncio.get_running_loop().call_soon(harness.thread.release_committed_seek.set)
    assert committed_seek is not None and committed_seek.done()
    assert handed == [30]
    assert harness.sent_seeks == [{INBOX: 12}, {INBOX: 12}]  # back to the committed offset, not to 31
