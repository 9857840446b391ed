"""Batch-run ticks: each worker ticks the inbox partitions it owns, and a tick
touches only its own partition's therapists (STYLE: time-driven work, design a)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import faust

from streams.kafka.topics import Topics
from streams.messages.bundles import partition_of
from streams.messages.codec import encode
from streams.messages.inbox import Tick

__all__ = ["bookmark_key", "partition_of", "send_ticks"]


def bookmark_key(partition: int) -> str:
    return f"batch-run:{partition}"


async def send_ticks(app: faust.App, topics: Topics, clock: Callable[[], datetime]) -> None:
    """Each worker ticks the inbox partitions it owns; the agent handling a tick
    touches only that partition's therapists, so table writes stay co-partitioned."""
    inbox = topics.inbox.get_topic_name()
    owned = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == inbox)
    value = encode(Tick(clock()))
    for partition in owned:
        await topics.inbox.send(value=value, partition=partition)
