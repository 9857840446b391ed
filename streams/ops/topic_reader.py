"""Reading a topic from an operator's command (``commsvc dlq``, ``commsvc status``):
with the service's own connection settings (TLS, SASL), without a consumer group,
up to the end offsets taken at the start, so that a read always ends; and with a
deadline on every step, so that a broker that does not answer is named instead of
waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.kafka import security
from streams.kafka.admin import bootstrap_servers, check_connection
from streams.kafka.security import BrokerSecurityError
from streams.settings import Settings

T = TypeVar("T")

# How long one step (connecting, one request, one fetch that makes no progress) may
# take before the command gives up, naming what did not answer.
DEFAULT_TIMEOUT = 15.0


class BrokerUnavailable(RuntimeError):
    """The broker did not answer, or refused the connection; the message says which."""


def quiet_kafka_logs() -> None:
    """aiokafka logs every failed connection attempt with a traceback; the command
    reports what went wrong itself, in one line."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


async def within(step: Awaitable[T], seconds: float, what: str) -> T:
    """``step``, or BrokerUnavailable naming ``what`` after ``seconds``."""
    try:
        return await asyncio.wait_for(step, seconds)
    except TimeoutError:
        raise BrokerUnavailable(f"{what} did not answer within {seconds:g}s") from None


@dataclass(frozen=True)
class Broker:
    """Where the broker is and how long a step may take."""

    settings: Settings
    timeout: float = DEFAULT_TIMEOUT

    @property
    def address(self) -> str:
        return bootstrap_servers(self.settings.kafka_broker)

    @property
    def options(self) -> dict[str, Any]:
        """aiokafka's connection options; they hold the SASL password: never log them."""
        timeout_ms = int(self.timeout * 1000)
        return {
            "bootstrap_servers": self.address,
            "request_timeout_ms": max(timeout_ms, 1000),
            **security.client_options(self.settings),
        }

    async def connect(self, start: Callable[[], Awaitable[None]]) -> None:
        """Run a client's ``start``: a refusal explained (certificate, credentials),
        anything else as the broker not being reachable."""
        what = f"the broker at {self.address}"
        try:
            await within(check_connection(self.settings), self.timeout, what)
            await within(start(), self.timeout, what)
        except BrokerSecurityError as exc:
            raise BrokerUnavailable(str(exc)) from None
        except KafkaConnectionError:
            raise BrokerUnavailable(f"{what} is not reachable (no connection could be made)") from None
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"{what} is not reachable ({str(exc) or type(exc).__name__})") from None


@asynccontextmanager
async def open_reader(broker: Broker) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group: it commits nothing and joins nothing."""
    consumer = AIOKafkaConsumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        **broker.options,
    )
    try:
        await broker.connect(consumer.start)
        yield consumer
    finally:
        await consumer.stop()


async def partitions(consumer: AIOKafkaConsumer, broker: Broker, topic: str) -> list[int]:
    """The partitions of ``topic``; none if it does not exist (yet). Only right on a
    consumer that has not been assigned partitions yet: from then on, aiokafka keeps
    the metadata of the assigned topics only."""
    found = await within(consumer.topics(), broker.timeout, f"the broker at {broker.address}")
    if topic not in found:
        return []
    return sorted(consumer.partitions_for_topic(topic) or ())


async def end_offsets(consumer: AIOKafkaConsumer, broker: Broker, topic: str) -> dict[int, int]:
    """partition -> the offset the next record will get, for every partition of ``topic``."""
    numbers = await partitions(consumer, broker, topic)
    if not numbers:
        return {}
    ends = await within(
        consumer.end_offsets([TopicPartition(topic, p) for p in numbers]),
        broker.timeout,
        f"the broker at {broker.address} (end offsets of {topic})",
    )
    return {tp.partition: int(offset) for tp, offset in ends.items()}


async def read_to_end(
    consumer: AIOKafkaConsumer,
    broker: Broker,
    topic: str,
    *,
    start: dict[int, int] | None = None,
    ends: dict[int, int] | None = None,
) -> AsyncGenerator[Any, None]:
    """Every record of ``topic`` from ``start`` (partition -> offset; default: the
    beginning) up to the end offsets taken now (or ``ends``), partition by partition
    in offset order. A fetch that makes no progress for the broker's timeout fails."""
    ends = await end_offsets(consumer, broker, topic) if ends is None else ends
    todo = {TopicPartition(topic, p): end for p, end in ends.items() if end > (start or {}).get(p, 0)}
    if not todo:
        return
    consumer.assign(list(todo))
    from_beginning = [tp for tp in todo if start is None or tp.partition not in start]
    if from_beginning:  # (none given would mean every assigned partition)
        await within(consumer.seek_to_beginning(*from_beginning), broker.timeout, f"the broker at {broker.address}")
    for tp in todo:
        if start is not None and tp.partition in start:
            consumer.seek(tp, start[tp.partition])
    loop = asyncio.get_running_loop()
    progress_at = loop.time()
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=200)
        for tp, records in batches.items():
            if tp not in todo:
                continue
            for record in records:
                if record.offset < todo[tp]:
                    yield record
        for tp in list(todo):
            # A position past the end: the rest was read (or removed by retention or compaction).
            if await consumer.position(tp) >= todo[tp]:
                consumer.pause(tp)
                del todo[tp]
        if batches:
            progress_at = loop.time()
        elif todo and loop.time() - progress_at > broker.timeout:
            waiting = ", ".join(f"{tp.partition}" for tp in todo)
            raise BrokerUnavailable(
                f"the broker at {broker.address} did not answer within {broker.timeout:g}s "
                f"while reading {topic} (partitions {waiting})"
            )
