"""Topic creation and the partition check against a real (Tansu) broker."""

from __future__ import annotations

import pytest

from streams.demo.broker import LocalBroker
from streams.kafka.admin import TopicMismatch, bootstrap_servers, ensure_topics
from streams.settings import Settings


@pytest.fixture(scope="module")
def broker():
    with LocalBroker() as running:
        yield running


async def test_creates_missing_topics_once_with_the_configured_partitions(broker):
    settings = Settings.from_environ({"COMM_KAFKA_BROKER": broker.url, "COMM_APP_ID": "a1", "COMM_PARTITIONS": "3"})
    created = await ensure_topics(settings)
    assert "a1-therapist-inbox" in created and "a1-therapists-changelog" in created
    assert await ensure_topics(settings) == []


async def test_refuses_internal_topics_with_another_partition_count(broker):
    await ensure_topics(
        Settings.from_environ({"COMM_KAFKA_BROKER": broker.url, "COMM_APP_ID": "a2", "COMM_PARTITIONS": "4"})
    )
    other = Settings.from_environ({"COMM_KAFKA_BROKER": broker.url, "COMM_APP_ID": "a2", "COMM_PARTITIONS": "8"})
    with pytest.raises(TopicMismatch, match="a2-therapist-inbox has 4 partitions, but COMM_PARTITIONS is 8"):
        await ensure_topics(other, attempts=1)


def test_bootstrap_servers_from_broker_urls():
    assert bootstrap_servers("kafka://h1:9092;kafka://h2:9093") == "h1:9092,h2:9093"
    assert bootstrap_servers("kafka://localhost:9092") == "localhost:9092"
