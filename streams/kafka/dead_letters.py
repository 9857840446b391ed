"""Dead-letter records (CONTRACT §5.8): the original message, where it came from, and
why; and the one dead-letter step every agent takes (``dead_letter_waiting``)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from streams.kafka.publishing import PublishRefused, until_published
from streams.messages.outputs import DeadLetter
from streams.ops.metrics import NO_METRICS, Metrics

log = logging.getLogger(__name__)

# A record must itself fit the broker's message limit (1 MB by default, with room
# for the request's overhead): a value that would make it larger is left out, and
# the record says where the original is.
MAX_RECORD_BYTES = 960 * 1024


def dead_letter(
    *,
    reason: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    received_at: datetime,
    event_id: str | None = None,
    event_type: str | None = None,
) -> bytes:
    """The DLQ message: nothing of the original is lost, so it can be fixed and replayed."""
    key_text, key_encoding = _text(key)
    value_text, value_encoding = _text(value)
    record = DeadLetter(
        reason=reason,
        source_topic=topic,
        partition=partition,
        offset=offset,
        received_at=received_at,
        key=key_text,
        key_encoding=key_encoding,
        event_id=event_id,
        event_type=event_type,
        value=value_text,
        value_encoding=value_encoding,
    )
    encoded = _encode(record)
    if len(encoded) <= MAX_RECORD_BYTES or value is None:
        return encoded
    without_value = record.model_copy(
        update={
            "value": None,
            "value_encoding": None,
            "value_bytes": len(value),
            "value_omitted": (
                f"the value ({len(value)} bytes) is too large to copy here; it stays at "
                "source_topic/partition/offset for its topic's retention"
            ),
        }
    )
    return _encode(without_value)


def _encode(record: DeadLetter) -> bytes:
    # Spaced JSON, as the DLQ has always been written (output events are compact).
    return json.dumps(record.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")


def _text(raw: bytes | None) -> tuple[str | None, Literal["base64"] | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


async def dead_letter_waiting(
    dlq: Any,
    message: Any,
    reason: str,
    received_at: datetime,
    warn: Callable[..., None],
    *,
    event_id: str | None = None,
    event_type: str | None = None,
    metrics: Metrics = NO_METRICS,
) -> None:
    """Dead-letter a consumed Kafka ``message``, waiting out broker trouble. A record
    the broker can never take (it is kept small, so this should not happen) is logged
    and skipped: the stream must go on."""
    try:
        await until_published(
            lambda: _publish(dlq, message, reason, received_at, event_id=event_id, event_type=event_type),
            warn,
        )
        metrics.dead_lettered(message.topic)
    except PublishRefused:
        log.error(
            "the broker refused the dead letter of %s[%d]@%d; skipped", message.topic, message.partition, message.offset
        )


async def _publish(
    dlq: Any,
    message: Any,
    reason: str,
    received_at: datetime,
    *,
    event_id: str | None = None,
    event_type: str | None = None,
) -> None:
    """One attempt to send ``message``'s record to the DLQ topic, keyed as it was."""
    await dlq.send(
        key=message.key,
        value=dead_letter(
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            received_at=received_at,
            event_id=event_id,
            event_type=event_type,
        ),
    )
