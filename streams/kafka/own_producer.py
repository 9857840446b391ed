"""A producer of the outbox relay's own, apart from Faust's.

The relay publishes every event the database side writes (three or more per email)
in bursts of up to 500. On Faust's producer they shared its batches with the
agents' records, and under the README's Tansu settings
(``COMM_PRODUCER_MAX_BATCH_SIZE=1``, needed there for table recovery) each event
went in a batch of its own: during a 1,000-email burst ``email_sent`` came 2 to 3 s
after the SMTP server accepted the email. Nothing the relay publishes is a
changelog, so its producer batches as aiokafka does by default. It is not
idempotent (Tansu refuses that); the relay's ``event_id`` makes a repeat harmless."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.kafka import security
from streams.kafka.admin import bootstrap_servers
from streams.settings import Settings


class OwnProducer:
    """Faust's ``send(topic, key, value, partition, timestamp, headers)``, started
    at the first send (the broker may not be reachable when the worker starts)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None, timestamp: Any, headers: Any
    ) -> asyncio.Future[Any]:
        producer = await self._started()
        sent: asyncio.Future[Any] = await producer.send(topic, value=value, key=key, partition=partition)
        return sent

    async def _started(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=bootstrap_servers(self.settings.kafka_broker),
                    acks="all",
                    enable_idempotence=False,
                    **security.client_options(self.settings),
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # its connections, before the relay retries
                    raise
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
