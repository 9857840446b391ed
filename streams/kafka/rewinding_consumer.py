"""Faust's consumer, with records that a rebalance interrupts fetched again.

Faust's fetch loop takes a batch of records from aiokafka (whose position then
moves past them) and hands them on one by one. During a rebalance Faust drops the
rest of such a batch: when the flow is stopped, when the generation changes, and
-- silently -- when the batch was fetched before a seek but is handed on after it,
because each record handed on still moves the partition's "read offset", and the
records fetched again after the seek then fall below it and are discarded. Faust
counts on its seek to committed offsets to bring dropped records back, but that
seek only covers partitions with committed offsets: a table's changelog has none,
so its records were lost to the table recovery, which then waited forever for
them; and input records dropped after that seek stayed unprocessed (and
uncommitted) until the next rebalance. Both were seen on a real broker when a
second worker joined or one was killed.

Here every record of an active partition that a batch does not hand on is
fetched again: the partition is rewound to its first record not handed on, or to
where a seek during the batch sent it if that is earlier, and the read offsets a
stale batch moved are put back. (Records of paused partitions are skipped, as in
Faust.)
Records may come twice; every handler of this service is idempotent, and the
table recovery ignores changelog offsets it has already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

log = logging.getLogger(__name__)


def rewind_plan(
    batch: Mapping[TP, Sequence[Any]],
    handed_on: Mapping[TP, int],
    seeks_during_batch: Mapping[TP, int],
) -> tuple[dict[TP, int], dict[TP, int]]:
    """Where to rewind after a batch was cut short or outlived a seek.

    ``batch`` holds each partition's records in offset order, ``handed_on`` how
    many of them were handed on, ``seeks_during_batch`` where seeks since the
    batch was fetched sent each partition. Returns (partition -> offset to seek
    to, partition -> read offset to restore): a partition with records not
    handed on goes back to the first of them, or to its seek target if that is
    earlier; a partition that was sought but has nothing left gets the read
    offset of its seek back (a stale record may have moved it past the target)."""
    rewind: dict[TP, int] = {}
    for tp, records in batch.items():
        first_left = handed_on.get(tp, 0)
        if first_left < len(records):
            rewind[tp] = records[first_left].offset
    restore: dict[TP, int] = {}
    for tp, target in seeks_during_batch.items():
        if tp in rewind:
            rewind[tp] = min(rewind[tp], target)
        else:
            restore[tp] = target
    return rewind, restore


class RewindingConsumer(aiokafka_driver.Consumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeks = 0
        # partition -> (number of the latest seek that moved it, its target)
        self._sought: dict[TP, tuple[int, int]] = {}
        # aiokafka reports where a seek to committed offsets went only once it is
        # done: a rewind waits for it rather than miss an earlier target.
        self._committed_seeks = 0
        self._no_committed_seek = asyncio.Event()
        self._no_committed_seek.set()

    def _note_seeks(self, offsets: Mapping[Any, int]) -> None:
        self._seeks += 1
        for tp, offset in offsets.items():
            self._sought[ensure_TP(tp)] = (self._seeks, offset)

    async def seek(self, partition: TP, offset: int) -> None:
        self._note_seeks({partition: offset})
        await super().seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self._note_seeks(partitions)
        await super().seek_wait(partitions)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        self._seeks += 1  # before the seek: a batch in progress must notice it
        self._committed_seeks += 1
        self._no_committed_seek.clear()
        try:
            committed: Mapping[TP, int] = await super().seek_to_committed()
        finally:
            self._committed_seeks -= 1
            if not self._committed_seeks:
                self._no_committed_seek.set()
        # aiokafka moves only the partitions with a committed offset.
        self._note_seeks({tp: offset for tp, offset in committed.items() if offset and offset > 0})
        return committed

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 - Faust's signature
        """Faust's ``Consumer.getmany``, except that what a batch does not hand on
        is fetched again (see the module docstring)."""
        seeks_before = self._seeks
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        handed_on = dict.fromkeys(records, 0)
        cut_short = not self.flow_active
        if not cut_short:
            for tp, record in self.scheduler.iterate(records):
                if (
                    not self.flow_active
                    or self.app.consumer_generation_id != generation_id
                    or self._seeks != seeks_before
                ):
                    cut_short = True
                    break
                if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    yield tp, self._to_message(tp, record)
                # Records of inactive (paused) partitions are skipped, as in Faust.
                handed_on[tp] += 1
        if cut_short or self._seeks != seeks_before:
            await self._rewind(records, handed_on, seeks_before)

    async def _rewind(
        self, records: Mapping[TP, Sequence[Any]], handed_on: Mapping[TP, int], seeks_before: int
    ) -> None:
        await self._no_committed_seek.wait()
        # From here to the seek request nothing awaits: the seeks recorded and the
        # assignment are those the consumer thread will see first.
        sought = {tp: offset for tp, (number, offset) in self._sought.items() if number > seeks_before}
        rewind, restore = rewind_plan(records, handed_on, sought)
        assigned = self.assignment()
        for tp, offset in restore.items():
            if tp in assigned:
                self._read_offset[tp] = offset if offset > 0 else None
        rewind = {tp: offset for tp, offset in rewind.items() if tp in assigned}
        if not rewind:
            return
        log.info("a rebalance interrupted a fetched batch: %d partition(s) rewound to read it again", len(rewind))
        try:
            await self.seek_wait(rewind)
        except Exception as exc:  # Faust's own seek here is guarded the same way
            # The partitions were reassigned meanwhile (that rebalance seeks them
            # again), or the broker did not answer.
            log.warning("could not rewind an interrupted batch (%s)", type(exc).__name__)
