"""The Faust app, its topics and its table, built from settings (nothing at import time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from streams.codec import STATE_CODEC, register_state_codec
from streams.consumer_fix import RewindingConsumer
from streams.settings import Settings

RAW = {"key_serializer": "raw", "value_serializer": "raw"}
THERAPIST_TABLE = "therapists"


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


class ServiceFaustApp(faust.App):  # type: ignore[misc]
    fetch_max_wait_ms = 1500

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: Settings) -> faust.App:
    options: dict[str, Any] = {
        "broker": settings.kafka_broker,
        "store": "memory://",
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
        "web_enabled": settings.web_port is not None,
        "autodiscover": False,
    }
    if settings.web_port is not None:
        options["web_port"] = settings.web_port
    if settings.producer_max_batch_size is not None:
        options["producer_max_batch_size"] = settings.producer_max_batch_size
    app = ServiceFaustApp(settings.app_id, **options)
    app.fetch_max_wait_ms = round(settings.consumer_fetch_max_wait.total_seconds() * 1000)
    return app


def internal_topic_names(settings: Settings) -> dict[str, str]:
    prefix = settings.app_id
    return {
        "inbox": f"{prefix}-therapist-inbox",
        "send_commands": f"{prefix}-send-commands",
        "changelog": f"{prefix}-{THERAPIST_TABLE}-changelog",
    }


@dataclass(frozen=True)
class Topics:
    matching: faust.TopicT
    therapists: faust.TopicT
    commands: faust.TopicT
    events: faust.TopicT
    dlq: faust.TopicT
    # Everything about one therapist, keyed by therapist: repartitioned inputs,
    # batch-run ticks and delivery feedback. Co-partitioned with the table.
    inbox: faust.TopicT
    # Therapist agent -> sender agent: emails to create and requests to settle.
    send_commands: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    names = internal_topic_names(settings)

    def topic(name: str, **extra: Any) -> faust.TopicT:
        return app.topic(name, partitions=extra.pop("partitions", None), **RAW, **extra)

    return Topics(
        matching=topic(settings.topic_matching),
        therapists=topic(settings.topic_therapists),
        commands=topic(settings.topic_commands),
        events=topic(settings.topic_events),
        dlq=topic(settings.topic_dlq),
        inbox=topic(names["inbox"], partitions=settings.partitions, internal=True),
        send_commands=topic(names["send_commands"], partitions=settings.partitions, internal=True),
    )


def declare_therapist_table(app: faust.App, settings: Settings) -> faust.Table:
    """therapist_id -> TherapistState, plus one batch-run bookmark per partition."""
    register_state_codec()
    table = app.Table(THERAPIST_TABLE, default=None, partitions=settings.partitions)
    # Faust derives serializers from key_type/value_type (faust Records). Writes read
    # these attributes; recovery decodes through the changelog topic, which was
    # already built (with JSON) when the table registered, so it is built again.
    table.key_serializer = "json"
    table.value_serializer = STATE_CODEC
    table.changelog_topic = table._new_changelog_topic()
    return table
