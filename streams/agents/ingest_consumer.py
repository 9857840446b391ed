"""The input topics, read in large batches by a consumer of aiokafka's own.

Faust hands an agent one record at a time: its fetcher, its conductor, the
stream's iteration and the sensors cost about 0.3 ms a record here, and the ingest
agents did nothing else but validate and repartition. Their batches of at most 250
reached the therapist agent as small bundles, so it wrote nearly every therapist
once per event. Read here with ``getmany``, up to BATCH records at a time, inputs
that are behind reach the inbox in large bundles, and the therapist agent writes
each therapist once for all its events of a batch (BENCHMARKS.md, "Batched ingest").
A lone input is read at once, as before.

At least once: a batch's offsets are committed only after every inbox record it
caused (and every dead letter) is acknowledged by the broker. A worker stopped or
killed in between reads the batch again; the therapist agent recognises the
repeated events by their ``event_id``. A commit refused because a rebalance came
first leaves the batch to the partitions' next owner, which reads it again.

The consumer's group is ``<COMM_APP_ID>-ingest`` (``topics.ingest_group``): Faust's group,
``COMM_APP_ID``, still reads the commands and the internal topics. ``commsvc
status`` reports each topic's lag under the group that reads it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service

from streams.agents.ingest import IngestAgent
from streams.kafka import security
from streams.kafka.admin import bootstrap_servers
from streams.kafka.topics import ingest_group
from streams.ops.logs import ThrottledWarning
from streams.settings import Settings

log = logging.getLogger(__name__)

# Records read at most at once (aiokafka's fetches bound the bytes held), and how
# long a read waits for the first record.
BATCH = 10_000
READ_WAIT_MS = 1000
# How long to wait before connecting again when the broker cannot be reached.
RECONNECT_PAUSE = 1.0


@dataclass(frozen=True)
class Input:
    """An input record as the ingest agents take it (a Faust event's ``message``)."""

    message: ConsumerRecord[bytes, bytes]

    @property
    def value(self) -> bytes | None:
        value: bytes | None = self.message.value
        return value


class IngestConsumer(Service):  # type: ignore[misc]
    """Reads the input topics and hands each batch to the ingest agent of its topic."""

    def __init__(self, settings: Settings, agents: Mapping[str, IngestAgent], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.agents = dict(agents)  # topic -> its ingest agent
        # Since joining, a read came back short of BATCH (or empty): what was waiting
        # when the worker started (inputs a stopped worker did not commit) is in the
        # inbox. Batch runs wait for it (see streams/bootstrap.py).
        self.caught_up = False
        self._joined = asyncio.Event()
        self.read = 0  # inputs handed on
        self.consume_task: asyncio.Task[Any] | None = None
        self.broker_warning = ThrottledWarning(log)

    @property
    def joined(self) -> bool:
        """The group gave this worker its share of the inputs (maybe none) at least once."""
        return self._joined.is_set()

    def note_joined(self) -> None:
        self._joined.set()

    @property
    def running(self) -> bool:
        """Started, neither stopped nor crashed, and its loop still going (for /readyz)."""
        return self.state == "running" and self.consume_task is not None and not self.consume_task.done()

    async def wait_joined(self) -> None:
        """Until the group has given this worker its share of the inputs (maybe none)."""
        await self._joined.wait()

    @Service.task
    async def _consume(self) -> None:
        self.consume_task = asyncio.current_task()
        while not self.should_stop:
            consumer = self._consumer()
            consumer.subscribe(list(self.agents), listener=_Joined(self))
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                refused = security.explain(exc, self.settings, bootstrap_servers(self.settings.kafka_broker))
                if refused is not None:
                    raise refused from exc
                self.broker_warning("ingest: the broker cannot be reached (%s); retrying", type(exc).__name__)
                await self.sleep(RECONNECT_PAUSE)
                continue
            try:
                await self._read(consumer)
            except KafkaError as exc:
                # What was read and not committed is read again, after connecting again.
                self.broker_warning("ingest: the broker failed (%s); connecting again", type(exc).__name__)
            finally:
                await consumer.stop()
            await self.sleep(RECONNECT_PAUSE)

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            batches = await consumer.getmany(timeout_ms=READ_WAIT_MS, max_records=BATCH)
            count = sum(len(records) for records in batches.values())
            if batches:
                await self.take(batches)
                try:
                    await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
                except CommitFailedError as exc:
                    log.info("ingest: %d input(s) left to the partitions' next owner (%s)", count, exc)
            if count < BATCH and self.joined:
                self.caught_up = True

    async def take(self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """One read: each topic's records to its agent, in their order."""
        by_topic: dict[str, list[Input]] = {}
        for tp, records in batches.items():
            by_topic.setdefault(tp.topic, []).extend(Input(record) for record in records)
        for topic, inputs in by_topic.items():
            await self.agents[topic].take(inputs)
            self.read += len(inputs)

    def _consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(settings.kafka_broker),
            group_id=ingest_group(settings),
            client_id=ingest_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=_ms(settings.broker_session_timeout.total_seconds()),
            heartbeat_interval_ms=_ms(settings.broker_heartbeat_interval.total_seconds()),
            fetch_max_wait_ms=_ms(settings.consumer_fetch_max_wait.total_seconds()),
            # A partition's fetch must hold the largest input allowed, with room to spare.
            max_partition_fetch_bytes=max(1024 * 1024, 2 * settings.max_event_bytes),
            **security.client_options(settings),
        )


class _Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes the first assignment (readiness), and follows rebalances in the log."""

    def __init__(self, owner: IngestConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner.note_joined()
        log.info("ingest: reading %d input partition(s)", len(assigned))


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
