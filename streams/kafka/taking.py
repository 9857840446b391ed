"""Batches of a Faust stream's events, taken while the previous batch is processed.

Faust's ``noack_take(max_, within)`` stops reading the stream while its caller
processes a batch (one event waits, the rest stay in the channel), and then reads
for ``within`` before it hands out the next batch, however many events are
already waiting. Under load an agent whose batch costs a broker round trip then
takes a few events per round trip, and the rest queue in the channel: during a
batch run's burst an acceptance waited there for about a second before the
therapist agent saw it (BENCHMARKS.md, "Latency").

``noack_batches`` reads on while the caller processes: the next batch is what
arrived meanwhile (up to ``max_``), handed out at once; only a batch that starts
from nothing waits up to ``within`` for company, as before. So batches grow with
the load, and a lone event waits no longer than it did.

As with ``noack_take``, nothing is acknowledged here: the caller acknowledges each
event once its effects are stored, in the order taken (a gap in the acks would let
the consumer commit past an event not yet processed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust

# How long an idle wait for the first event lasts before it looks at the stream's
# state again (an event, or the stream's stop, ends it at once).
IDLE_WAIT = 1.0


async def noack_batches(stream: faust.StreamT, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """The stream's events in batches of at most ``max_``, in order, unacknowledged."""
    faust_stream: Any = stream  # the Faust internals its own take uses
    buffer: list[Any] = []
    arrived = asyncio.Event()  # the buffer holds something
    full = asyncio.Event()  # the buffer holds max_
    room = asyncio.Event()  # the buffer holds less than max_
    room.set()

    async def add_to_buffer(value: Any) -> Any:
        # A processor: the stream runs it on every event, in order, in its own task.
        while len(buffer) >= max_:
            room.clear()
            await faust_stream.wait(room)
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("a stream event without its current_event")
        buffer.append(event)
        arrived.set()
        if len(buffer) >= max_:
            full.set()
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    # Faust's own take reads the stream in the background this way; the stream's
    # processors then run as its events arrive, whatever the caller does.
    faust_stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not buffer:
                arrived.clear()
                await faust_stream.wait_for_stopped(arrived, timeout=IDLE_WAIT)
                if not buffer:
                    continue
                if len(buffer) < max_:
                    # A batch from nothing: company for the first event, up to within.
                    await faust_stream.wait_for_stopped(full, timeout=within)
            batch = buffer[:max_]
            del buffer[: len(batch)]
            full.clear()
            room.set()
            yield batch
    finally:
        stream.enable_acks = enable_acks
        faust_stream._processors.remove(add_to_buffer)
