"""Creating the service's topics explicitly, with the partition count it needs
(auto-created topics would get the broker's default)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.kafka import security
from streams.kafka.topics import internal_topic_names
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


class TopicMismatch(RuntimeError):
    """An internal topic exists with the wrong number of partitions."""


def topic_plan(settings: Settings) -> list[tuple[str, int, dict[str, str]]]:
    """(name, partitions, config) of every topic the service reads or writes.

    The internal ones (the last three) must have exactly ``COMM_PARTITIONS``
    partitions: the table is co-partitioned with the inbox. Input topics may have
    any count, since everything is repartitioned by therapist into the inbox.

    The DLQ holds copies of refused inputs, patients' details included: it keeps
    them ``COMM_DLQ_RETENTION`` (docs/data-protection.md). The changelog is compacted:
    the latest value per therapist is the table.
    """
    internal = internal_topic_names(settings)
    n = settings.partitions
    plain: dict[str, str] = {}
    return [
        (settings.topic_matching, n, plain),
        (settings.topic_therapists, n, plain),
        (settings.topic_commands, n, plain),
        (settings.topic_events, n, plain),
        (settings.topic_dlq, n, {"retention.ms": str(milliseconds(settings.dlq_retention))}),
        (internal["inbox"], n, plain),
        (internal["send_commands"], n, plain),
        (internal["changelog"], n, {"cleanup.policy": "compact"}),
    ]


def milliseconds(duration: timedelta) -> int:
    return duration // timedelta(milliseconds=1)


async def ensure_topics(
    settings: Settings, *, attempts: int | None = None, sleep: Callable[[float], object] = asyncio.sleep
) -> list[str]:
    """Create the topics that do not exist yet (when COMM_CREATE_TOPICS), check that
    the internal ones have COMM_PARTITIONS partitions; wait (with backoff) for the broker.

    A broker that refuses the connection as configured (its certificate, TLS, the
    SASL credentials) raises ``BrokerSecurityError`` at once, naming the variable.
    """
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            await check_connection(settings)
            plan = topic_plan(settings)
            created = await _create_missing(settings, plan) if settings.create_topics else []
            await _verify_internal_partitions(settings, plan[-3:])
            return created
        except (KafkaError, OSError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("broker not reachable (%s); retrying in %.1fs", str(exc) or type(exc).__name__, delay)
            await sleep(delay)  # type: ignore[misc]
            delay = min(delay * 2, 10.0)


def _admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.kafka_broker),
        request_timeout_ms=10_000,
        **security.client_options(settings),
    )


async def check_connection(settings: Settings) -> None:
    """Connect to the bootstrap brokers as every client will (TLS, SASL), so that a
    refusal is explained (``security.explain``) instead of retried for ever: aiokafka
    itself reports only that it could not bootstrap. One broker answering is enough;
    if none does, what the last one raised (retried by the caller)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return  # nothing to explain: an unreachable broker is retried as before
    options = security.client_options(settings)
    unreachable: BaseException | None = None
    for address in bootstrap_servers(settings.kafka_broker).split(","):
        host, _, port = address.rpartition(":") if ":" in address else (address, "", "9092")
        try:
            connection = await create_conn(host.strip("[]"), int(port), request_timeout_ms=10_000, **options)
        except Exception as exc:  # not only KafkaError and OSError: see security.explain
            refused = security.explain(exc, settings, address)
            if refused is not None:
                raise refused from None
            if not isinstance(exc, KafkaError | OSError):
                raise
            unreachable = exc
            continue
        connection.close()
        return
    if unreachable is not None:
        raise unreachable


async def _verify_internal_partitions(settings: Settings, internal: list[tuple[str, int, dict[str, str]]]) -> None:
    admin = _admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([name for name, _, _ in internal])
    finally:
        await admin.close()
    found = {topic["topic"]: len(topic["partitions"]) for topic in described if not topic.get("error_code")}
    for name, partitions, _ in internal:
        if name in found and found[name] != partitions:
            raise TopicMismatch(
                f"topic {name} has {found[name]} partitions, but COMM_PARTITIONS is {partitions}: the table "
                "must be co-partitioned with the inbox. Use the partition count the topics were created "
                "with (or recreate them before any data exists)."
            )


async def _create_missing(settings: Settings, plan: Iterable[tuple[str, int, dict[str, str]]]) -> list[str]:
    admin = _admin_client(settings)
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
