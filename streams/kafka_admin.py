"""Creating the service's topics explicitly, with the partition count it needs
(auto-created topics would get the broker's default)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.app import internal_topic_names
from streams.settings import Settings

log = logging.getLogger(__name__)


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;kafka://h2:9092`` -> ``h1:9092,h2:9092``."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[-1].rstrip("/"))
    return ",".join(hosts)


def topic_plan(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, config) of every topic the service reads or writes."""
    internal = internal_topic_names(settings)
    n = settings.partitions
    plain: dict[str, str] = {}
    return [
        (settings.topic_matching, n, plain),
        (settings.topic_therapists, n, plain),
        (settings.topic_commands, n, plain),
        (settings.topic_events, n, plain),
        (settings.topic_dlq, n, plain),
        (internal["inbox"], n, plain),
        (internal["send_commands"], n, plain),
        (internal["changelog"], n, {"cleanup.policy": "compact"}),
    ]


async def ensure_topics(
    settings: Settings, *, attempts: int | None = None, sleep: Callable[[float], object] = asyncio.sleep
) -> list[str]:
    """Create the topics that do not exist yet; wait (with backoff) for the broker."""
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            return await _create_missing(settings, topic_plan(settings))
        except (KafkaError, OSError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("broker not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
            await sleep(delay)  # type: ignore[misc]
            delay = min(delay * 2, 10.0)


async def _create_missing(settings: Settings, plan: Iterable[tuple[str, int, dict[str, str]]]) -> list[str]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.kafka_broker), request_timeout_ms=10_000
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.replication_factor, topic_configs=config)
            for name, partitions, config in plan
            if name not in existing
        ]
        created = []
        for topic in missing:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # another worker was quicker
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()
