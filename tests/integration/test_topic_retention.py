"""The topics the service creates carry the data-protection settings
(docs/data-protection.md), as a real (Tansu) broker reports them: the DLQ keeps
records COMM_DLQ_RETENTION, the therapist table's changelog is compacted."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.demo.broker import LocalBroker
from streams.kafka.admin import bootstrap_servers, ensure_topics
from streams.kafka.topics import internal_topic_names
from streams.settings import Settings


@pytest.fixture(scope="module")
def broker():
    with LocalBroker() as running:
        yield running


async def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.kafka_broker))
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [(error_code, _, _, name, entries)] = response.resources
    assert (error_code, name) == (0, topic)
    return {entry[0]: entry[1] for entry in entries}


async def test_the_dlq_is_created_with_its_retention_and_the_changelog_compacted(broker):
    settings = Settings.from_environ(
        {"COMM_KAFKA_BROKER": broker.url, "COMM_APP_ID": "r1", "COMM_TOPIC_DLQ": "r1-dlq", "COMM_DLQ_RETENTION": "14d"}
    )
    created = await ensure_topics(settings)
    assert "r1-dlq" in created
    assert (await topic_config(settings, "r1-dlq")).get("retention.ms") == str(14 * 24 * 3600 * 1000)
    changelog = internal_topic_names(settings)["changelog"]
    assert (await topic_config(settings, changelog)).get("cleanup.policy") == "compact"
