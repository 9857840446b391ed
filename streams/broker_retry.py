"""Waiting out a broker that does not take messages, instead of giving up on them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError

T = TypeVar("T")


async def until_published(
    action: Callable[[], Awaitable[T]],
    warn: Callable[..., None],
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Run ``action`` until the broker takes what it publishes. Only broker trouble
    (Kafka errors, timeouts) is retried; the action must be safe to repeat (every
    message the service publishes is idempotent)."""
    delay = first_delay
    while True:
        try:
            return await action()
        except (KafkaError, TimeoutError) as exc:
            warn("broker unavailable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
