"""What ``commsvc status`` reads from the broker: the worker group's lag on each input
topic, the dead letters of the last 24 hours, and how many therapists' addresses
are suppressed.

- **Lag:** the group ``COMM_APP_ID``'s committed offsets (aiokafka's admin client)
  against the partitions' end offsets. A partition the group never committed counts
  from its first offset (the workers start there).
- **Suppressed addresses** live in the therapist table only, so they are counted
  from its changelog (compacted: the latest value per therapist), read to its end
  offsets. That reads every therapist's entry once: seconds for a few thousand
  therapists, longer for many more (progress goes to ``progress``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.topics import ingest_group, internal_topic_names
from streams.ops.dlq import read_all, select
from streams.ops.topic_reader import Broker, end_offsets, open_reader, read_to_end, within

# How often reading the changelog says how far it got.
PROGRESS_EVERY = 20_000
_SUPPRESSED = re.compile(rb'"suppression"\s*:\s*\{')


@dataclass(frozen=True)
class PartitionLag:
    committed: int | None  # None: the group has committed nothing here
    end: int
    lag: int


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: dict[int, PartitionLag]
    group: str  # the consumer group that reads the topic

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions.values())


@dataclass(frozen=True)
class BrokerStatus:
    group: str
    lag: list[TopicLag]
    dlq_since: datetime
    dlq_records: int
    dlq_by_source: dict[str, int]
    suppressed_addresses: int


async def committed_offsets(broker: Broker, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The group's committed offset per partition (-1: none)."""
    if not partitions:
        return {}
    admin = AIOKafkaAdminClient(**broker.options)
    try:
        await broker.connect(admin.start)
        # Naming the partitions: Tansu cannot answer the "all of them" form.
        found = await within(
            admin.list_consumer_group_offsets(group, partitions=partitions),
            broker.timeout,
            f"the broker at {broker.address} (committed offsets of group {group})",
        )
    finally:
        await admin.close()
    return {tp: int(meta.offset) for tp, meta in found.items()}


async def consumer_lag(broker: Broker, group: str, topics: list[str]) -> list[TopicLag]:
    async with open_reader(broker) as consumer:
        ends = {topic: await end_offsets(consumer, broker, topic) for topic in topics}
        partitions = [TopicPartition(topic, p) for topic, by_partition in ends.items() for p in by_partition]
        firsts = (
            await within(consumer.beginning_offsets(partitions), broker.timeout, f"the broker at {broker.address}")
            if partitions
            else {}
        )
    committed = await committed_offsets(broker, group, partitions)
    lags = []
    for topic in topics:
        by_partition = {}
        for partition, end in sorted(ends[topic].items()):
            tp = TopicPartition(topic, partition)
            offset = committed.get(tp, -1)
            read_from = offset if offset >= 0 else int(firsts.get(tp, 0))
            by_partition[partition] = PartitionLag(offset if offset >= 0 else None, end, max(end - read_from, 0))
        lags.append(TopicLag(topic, by_partition, group))
    return lags


async def dead_letters_since(broker: Broker, since: datetime) -> tuple[int, dict[str, int]]:
    """How many records the DLQ received since ``since``, and from which topics."""
    records, _ = await read_all(broker)
    by_source: dict[str, int] = {}
    chosen = select(records, since=since)
    for record in chosen:
        source = record.source_topic or "?"
        by_source[source] = by_source.get(source, 0) + 1
    return len(chosen), dict(sorted(by_source.items()))


def suppressed(value: bytes | None) -> bool:
    """Whether a changelog value is a therapist whose address is suppressed."""
    if value is None or _SUPPRESSED.search(value) is None:
        return False  # the common case, without decoding the value
    try:
        state = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(state, dict)
        and "therapist_id" in state
        and isinstance(state.get("suppression"), dict)
        and not state.get("deleted")
    )


async def suppressed_addresses(broker: Broker, progress: Callable[[str], None]) -> int:
    changelog = internal_topic_names(broker.settings)["changelog"]
    latest: dict[bytes | None, bool] = {}
    read = 0
    async with open_reader(broker) as consumer:
        ends = await end_offsets(consumer, broker, changelog)
        total = sum(ends.values())
        async for record in read_to_end(consumer, broker, changelog, ends=ends):
            latest[record.key] = suppressed(record.value)
            read += 1
            if read % PROGRESS_EVERY == 0:
                progress(f"reading the therapist table's changelog: {read} of at most {total} records")
    return sum(latest.values())


async def read(broker: Broker, since: datetime, progress: Callable[[str], None]) -> BrokerStatus:
    """Each part with a consumer of its own (a consumer that was assigned partitions
    knows the metadata of their topics only)."""
    settings = broker.settings
    # The input events are read by the ingest consumer's group, the commands by Faust's.
    lag = await consumer_lag(broker, ingest_group(settings), [settings.topic_matching, settings.topic_therapists])
    lag += await consumer_lag(broker, settings.app_id, [settings.topic_commands])
    count, by_source = await dead_letters_since(broker, since)
    return BrokerStatus(
        group=settings.app_id,
        lag=lag,
        dlq_since=since,
        dlq_records=count,
        dlq_by_source=by_source,
        suppressed_addresses=await suppressed_addresses(broker, progress),
    )
