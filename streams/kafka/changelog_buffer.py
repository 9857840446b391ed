"""Faust's buffer of table writes (their changelog records, waiting for the
producer), with two changes the service needs when each record is its own producer
batch (Tansu):

- *A bigger backlog, ebbed only to its limit.* Faust stops handing records to every
  agent while more than ``max_messages`` writes wait, and then waits until that
  many more have gone. Its 100 is soon reached when each record is a batch: a batch
  run's burst of writes held up every input, a confirmation's too, for seconds.
  Here the limit is CHANGELOG_BACKLOG and a record waits only until the pending
  writes are back at it. A commit still waits for all of them to be sent.
- *One lane per topic partition.* Faust hands the writes to the producer one after
  the other, and aiokafka holds a record while the batch before it on the same
  partition waits to be sent; with one record per batch, every write then waited
  behind the first one whose partition was busy, and a produce request carried
  about as many records as there were distinct partitions before a repeat. Here
  each topic partition has its own lane, in the order written, so a request
  carries a record for every partition with writes waiting. The order within a
  partition, the only order Kafka keeps, is the order written.
- *A write waiting in its lane is replaced by a newer write of the same key.* The
  changelog is compacted: a table recovers the last value of each key, and every
  write holds the key's whole value, so an older write not yet handed to the
  producer adds nothing. It is completed with the newer write's result (its
  callback, which records the changelog offset, runs then), so whoever waits for
  it waits for the write that carries its value. Under load (a slow broker) a
  therapist written by several batches in a row is sent once.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage
from mode import Service

# Table writes waiting for the producer before Faust stops handing records to the
# agents. Each holds one therapist's encoded state (about 1.5 KB; see
# BENCHMARKS.md), so a full backlog is some 15 MB.
CHANGELOG_BACKLOG = 10_000


class _Lane:
    """One topic partition's writes not yet handed to the producer, by key, in the
    order written (a replacing write takes the place of the one it replaces, so a
    key written again and again is not pushed back behind the others)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[Any, Any], FutureMessage] = {}
        self.ready = asyncio.Event()


class ChangelogBuffer(ProducerBuffer):  # type: ignore[misc]
    max_messages = CHANGELOG_BACKLOG

    def __post_init__(self) -> None:
        super().__post_init__()
        self._lanes: dict[tuple[int, int | None], _Lane] = {}
        self._in_lanes = 0  # taken from ``pending``, not yet handed to the producer
        self.replaced = 0  # writes replaced by a newer one of their key, since the start

    @property
    def size(self) -> int:
        """Writes waiting: not yet sorted into a lane, or waiting in one."""
        return int(self.pending.qsize()) + self._in_lanes

    async def wait_until_ebb(self) -> None:
        """What Faust's conductor awaits before handing on each record (Faust's own
        waits for ``max_messages`` more writes to go, however few are above it)."""
        while self.size > self.max_messages:
            if not await self.flush_atmost(self.size - self.max_messages):
                return  # nothing sent for a while (Faust gives up the same way)

    @Service.task
    async def _handle_pending(self) -> None:
        while not self.should_stop:
            future = await self.pending.get()
            message = future.message
            key = (id(message.channel), message.partition)  # partitioned eagerly by the table
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
                self.add_future(self._send_lane(lane))
            self._in_lanes += 1
            record_key = _record_key(future)
            older = lane.waiting.get(record_key)
            lane.waiting[record_key] = future  # in the older write's place, if any
            lane.ready.set()
            if older is not None:
                self._replace(older, future)

    def _replace(self, older: FutureMessage, newer: FutureMessage) -> None:
        newer.add_done_callback(partial(_complete_as, older))
        self._in_lanes -= 1
        self.replaced += 1
        self.message_sent.set()  # one write fewer waits, as if it had been sent

    async def _send_lane(self, lane: _Lane) -> None:
        # Runs until the buffer stops (its futures are cancelled after on_stop, whose
        # flush the lanes still serve).
        while True:
            if not lane.waiting:
                lane.ready.clear()
                await lane.ready.wait()
                continue
            record_key = next(iter(lane.waiting))
            future = lane.waiting.pop(record_key)
            try:
                await self._send_pending(future)
            finally:
                self._in_lanes -= 1
            self.message_sent.set()


def _record_key(future: FutureMessage) -> tuple[Any, Any]:
    """What makes two writes writes of the same table key; a key that cannot be
    hashed is never replaced."""
    message = future.message
    try:
        hash(message.key)
    except TypeError:
        return (id(future), None)
    return (message.key, message.key_serializer)


def _complete_as(older: FutureMessage, newer: asyncio.Future[Any]) -> None:
    """Complete a replaced write as the write that replaced it was (as Faust's
    Topic._on_published completes a sent one: the result, then the callback)."""
    if older.done():
        return
    if newer.cancelled():
        older.cancel()
    elif newer.exception() is not None:
        older.set_exception(newer.exception())
    else:
        older.set_result(newer.result())
        if older.message.callback:
            older.message.callback(older)


class LaneProducer(aiokafka_driver.Producer):  # type: ignore[misc]
    """Faust's aiokafka producer with a ChangelogBuffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buffer = ChangelogBuffer(loop=self.loop, beacon=self.beacon)
        buffer.app = self.app
        self.buffer = buffer
