"""Waiting out a broker that does not take messages, instead of giving up on them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import errors

T = TypeVar("T")

# What waiting cannot cure: the message itself (too large) or what it is sent to
# (no such topic, not allowed). The caller dead-letters the input that caused it.
PERMANENT = tuple(
    getattr(errors, name)
    for name in (
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
        "ClusterAuthorizationFailedError",
        "TransactionalIdAuthorizationFailed",
        "InvalidRecordError",
        "CorruptRecordError",
    )
    if hasattr(errors, name)
)


class PublishRefused(Exception):
    """The broker can never take this message; the input that caused it is dead-lettered."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"the broker refused a message for good: {type(cause).__name__}")
        self.cause = cause


def _causes(exc: BaseException) -> list[BaseException]:
    """The error and what caused it: Faust wraps aiokafka's errors in its own
    ProducerSendError."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def permanent_cause(exc: BaseException) -> BaseException | None:
    """The error in the chain that waiting cannot cure, if any."""
    return next((e for e in _causes(exc) if isinstance(e, PERMANENT)), None)


def _is_broker_trouble(exc: BaseException) -> bool:
    return any(isinstance(e, errors.KafkaError | TimeoutError) for e in _causes(exc))


async def until_published(
    action: Callable[[], Awaitable[T]],
    warn: Callable[..., None],
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Run ``action`` until the broker takes what it publishes. Only broker trouble
    (Kafka errors, timeouts) is retried; the action must be safe to repeat (every
    message the service publishes is idempotent). An error waiting cannot cure
    raises ``PublishRefused`` at once."""
    delay = first_delay
    while True:
        try:
            return await action()
        except Exception as exc:
            cause = permanent_cause(exc)
            if cause is not None:
                raise PublishRefused(cause) from exc
            if not _is_broker_trouble(exc):
                raise
            warn("broker unavailable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
