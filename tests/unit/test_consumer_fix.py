"""The consumer fetches again whatever a rebalance stops a batch from handing on
(streams/consumer_fix.py); the end-to-end scale-out test shows it on the broker."""

from __future__ import annotations

import asyncio
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from streams.consumer_fix import RewindingConsumer, rewind_plan

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


class Harness:
    """A RewindingConsumer without Faust's machinery: a batch to return, and the
    seeks it asks for recorded instead of sent to aiokafka."""

    def __init__(self, batch: dict[TP, list[Record]], *, flow_active: bool = True) -> None:
        consumer: Any = RewindingConsumer.__new__(RewindingConsumer)
        consumer._seeks = 0
        consumer._sought = {}
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
        self.sent_seeks: list[dict[TP, int]] = []

        async def next_records(timeout: float) -> tuple[dict[TP, list[Record]], set[TP]]:
            return batch, set(batch)

        async def seek_wait(partitions: dict[TP, int]) -> None:
            consumer._note_seeks(partitions)
            self.sent_seeks.append(dict(partitions))

        consumer._wait_next_records = next_records
        consumer.seek_wait = seek_wait
        self.consumer = consumer


async def test_a_batch_that_outlives_a_seek_stops_and_is_fetched_from_the_seek_target():
    harness = Harness({CHANGELOG: records(CHANGELOG, 30, 39)})
    handed: list[int] = []
    async for tp, record in harness.consumer.getmany(timeout=1.0):
        handed.append(record.offset)
        harness.consumer._read_offset[tp] = record.offset  # what Faust's fetch loop does
        if record.offset == 32:
            harness.consumer._note_seeks({CHANGELOG: 0})  # the table recovery seeks to the start
    assert handed == [30, 31, 32]
    assert harness.sent_seeks == [{CHANGELOG: 0}]


async def test_records_fetched_while_the_flow_is_stopped_are_fetched_again():
    harness = Harness({INBOX: records(INBOX, 7, 9), CHANGELOG: records(CHANGELOG, 0, 39)}, flow_active=False)
    handed = [record async for _, record in harness.consumer.getmany(timeout=1.0)]
    assert handed == []
    assert harness.sent_seeks == [{INBOX: 7, CHANGELOG: 0}]


async def test_a_seek_while_the_last_record_was_handled_puts_the_read_offset_back():
    harness = Harness({INBOX: records(INBOX, 7, 9)})
    async for tp, record in harness.consumer.getmany(timeout=1.0):
        if record.offset == 9:
            harness.consumer._note_seeks({INBOX: 4})  # Faust's seek to committed offsets
        harness.consumer._read_offset[tp] = record.offset
    assert harness.consumer._read_offset[INBOX] == 4  # not 9: offsets 4..8 must not be dropped
    assert harness.sent_seeks == []


async def test_an_undisturbed_batch_is_handed_on_whole_without_seeks():
    harness = Harness({INBOX: records(INBOX, 7, 9), CHANGELOG: records(CHANGELOG, 0, 1)})
    handed = [record.offset async for _, record in harness.consumer.getmany(timeout=1.0)]
    assert sorted(handed) == [0, 1, 7, 8, 9]
    assert harness.sent_seeks == []
