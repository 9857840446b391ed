"""The Faust app, built from settings (nothing at import time), with the consumer
the service needs on Tansu and on rebalances."""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams.kafka import security, store
from streams.kafka.changelog_buffer import LaneProducer
from streams.kafka.rewinding_consumer import RewindingConsumer
from streams.kafka.table_gate import TableGate
from streams.ops import web
from streams.settings import Settings


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes this at 1500 ms. Brokers that do not end a waiting fetch when
        # data arrives (Tansu) add up to that much latency per hop; read before
        # the consumer starts its fetcher.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


class _Consumer(RewindingConsumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(aiokafka_driver.Transport):  # type: ignore[misc]
    Consumer = _Consumer
    Producer = LaneProducer  # its changelog buffer: streams.kafka.changelog_buffer


# How long a stop or a rebalance waits for the therapist agent's batch in hand
# (milliseconds, normally; longer only while it waits out a broker outage).
TABLE_WORK_WAIT = 5.0


class ServiceFaustApp(faust.App):  # type: ignore[misc]
    fetch_max_wait_ms = 1500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table_gate = TableGate()

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    # Faust gives the table's partitions up while the agents still run; the gate
    # holds the therapist agent's table work clear of that (streams.kafka.table_gate).
    async def _stop_consumer(self) -> None:
        await self.table_gate.stop(TABLE_WORK_WAIT)
        await super()._stop_consumer()

    async def _on_partitions_revoked(self, revoked: set[Any]) -> None:
        if not self.should_stop:
            await self.table_gate.pause(TABLE_WORK_WAIT)
        await super()._on_partitions_revoked(revoked)

    async def _on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
        try:
            await super()._on_partitions_assigned(assigned, generation_id)
        finally:
            self.table_gate.resume()


def create_app(settings: Settings) -> ServiceFaustApp:
    options: dict[str, Any] = {
        "broker": settings.kafka_broker,
        "processing_guarantee": "at_least_once",
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": settings.broker_session_timeout.total_seconds(),
        "broker_heartbeat_interval": settings.broker_heartbeat_interval.total_seconds(),
        "table_standby_replicas": settings.table_standby_replicas,
        # Stop promptly even with messages in hand (e.g. send commands waiting out a
        # database outage): they are not acknowledged, so they come again after the
        # restart, and every handler here is idempotent.
        "stream_wait_empty": False,
        "autodiscover": False,
        **security.faust_options(settings),
        **store.faust_options(settings),
        **web.faust_options(settings),
    }
    if settings.producer_max_batch_size is not None:
        options["producer_max_batch_size"] = settings.producer_max_batch_size
    app = ServiceFaustApp(settings.app_id, **options)
    app.fetch_max_wait_ms = round(settings.consumer_fetch_max_wait.total_seconds() * 1000)
    return app
