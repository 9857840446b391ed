"""noack_batches on a real Faust stream (in memory): what arrives while a batch is
processed is the next batch, at once; batches are at most ``max_``, in order, and
nothing is acknowledged for the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from streams.kafka.taking import noack_batches
from tests.waiting import until

WITHIN = 0.005


@pytest.fixture
async def stream() -> AsyncIterator[Any]:
    # An in-memory channel: the app is never started, nor its broker reached.
    app = faust.App("test-taking", broker="kafka://127.0.0.1:9", loop=asyncio.get_running_loop())
    app.flow_control.resume()  # suspended until a Faust worker starts
    async with app.channel(maxsize=1000, loop=app.loop).stream(loop=app.loop) as running:
        yield running
    # The stream made the app's consumer, whose thread (never started) has a loop.
    thread = getattr(app.consumer, "_thread", None)
    if thread is not None:
        thread.thread_loop.close()


async def send(stream: Any, values: range) -> None:
    for value in values:
        await stream.channel.send(value=value)


async def drained(stream: Any) -> None:
    """Until the stream has taken everything sent to its channel."""
    await until(stream.channel.queue.empty, 5, "the channel drained")


async def test_what_arrives_while_a_batch_is_processed_is_the_next_batch_at_once(stream: Any) -> None:
    batches: list[list[int]] = []
    processing = asyncio.Event()
    release = asyncio.Event()

    async def consume() -> None:
        async for events in noack_batches(stream, 100, WITHIN):
            batches.append([event.value for event in events])
            if len(batches) == 1:
                processing.set()
                await release.wait()
            if sum(map(len, batches)) == 30:
                return

    consumer = asyncio.ensure_future(consume())
    await send(stream, range(1))
    await asyncio.wait_for(processing.wait(), 5)
    await send(stream, range(1, 30))
    await drained(stream)  # all 29 taken from the channel while the first batch is in hand
    release.set()
    await asyncio.wait_for(consumer, 5)

    # Faust's noack_take would take one more event while the caller processes,
    # then whatever comes within WITHIN: [[0], [1], ...].
    assert batches == [[0], list(range(1, 30))]


async def test_batches_hold_at_most_max_events_in_their_order_unacknowledged(stream: Any) -> None:
    batches: list[list[Any]] = []

    async def consume() -> None:
        async for events in noack_batches(stream, 100, WITHIN):
            batches.append(list(events))
            if sum(map(len, batches)) == 250:
                return

    consumer = asyncio.ensure_future(consume())
    await send(stream, range(250))
    await asyncio.wait_for(consumer, 5)

    assert max(map(len, batches)) <= 100
    events = [event for batch in batches for event in batch]
    assert [event.value for event in events] == list(range(250))
    assert not any(event.message.acked for event in events)
    for event in events:
        await stream.ack(event)
    assert all(event.message.acked for event in events)


async def test_a_lone_event_is_handed_out_alone(stream: Any) -> None:
    batches: list[list[int]] = []

    async def consume() -> None:
        async for events in noack_batches(stream, 100, WITHIN):
            batches.append([event.value for event in events])
            return

    consumer = asyncio.ensure_future(consume())
    await send(stream, range(1))
    await asyncio.wait_for(consumer, 5)
    assert batches == [[0]]
