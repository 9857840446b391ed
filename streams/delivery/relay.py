"""Relays the outbox to Kafka, in order, whenever the broker takes it.

One worker at a time holds the relay lease, so messages leave in the order they
were written. A message is marked published only after the broker acknowledged
it; if the worker dies in between, the next holder publishes it again (with the
same event_id). A message the broker can never take (too large, an invalid topic)
is parked with the reason and an alert instead of holding up everything after it.
Published rows are deleted after COMM_OUTBOX_RETENTION.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka.errors import (
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from mode import Service
from sqlalchemy.exc import SQLAlchemyError

from streams.ops.logs import ThrottledWarning
from streams.ops.metrics import NO_METRICS, Metrics
from streams.persistence import outbox
from streams.persistence.db import Database
from streams.settings import Settings

log = logging.getLogger(__name__)

LEASE = "outbox-relay"
BATCH = 500
PURGE_EVERY = 600.0  # seconds
# The broker will never take these, however often they are sent.
UNPUBLISHABLE = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidTopicError, TopicAuthorizationFailedError)


class OutboxRelay(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        database: Database,
        producer: Any,
        alerts: str,
        wakeup: asyncio.Event,
        worker_id: str,
        clock: Callable[[], datetime],
        *,
        metrics: Metrics = NO_METRICS,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.metrics = metrics  # counts what the published events report
        self.database = database
        self.producer = producer
        self.alerts = alerts  # the events topic, for the alert about a parked message
        self.wakeup = wakeup
        self.worker_id = worker_id
        self.clock = clock
        self.published = 0
        self.purged_at = 0.0
        self.held_at: float | None = None  # monotonic time the lease was last taken
        self.relay_task: asyncio.Task[Any] | None = None
        self.database_warning = ThrottledWarning(log)
        self.broker_warning = ThrottledWarning(log)

    @property
    def running(self) -> bool:
        """Started, neither stopped nor crashed, and its loop still going (for /readyz)."""
        return self.state == "running" and self.relay_task is not None and not self.relay_task.done()

    @Service.task
    async def _relay(self) -> None:
        self.relay_task = asyncio.current_task()
        pause = self.settings.poll_interval.total_seconds()
        lease = max(timedelta(seconds=30), self.settings.poll_interval * 10)
        while not self.should_stop:
            self.wakeup.clear()
            try:
                holder = await self._hold(lease)
                batch = await self.database.run(outbox.unpublished, BATCH) if holder else []
                if batch:
                    if await self._publish(batch):
                        continue
                    await self.sleep(pause)  # the broker is not taking messages: retry soon
                    continue
                if holder:
                    await self._purge()
            except SQLAlchemyError as exc:
                self.held_at = None
                self.database_warning("outbox relay: database unavailable (%s); retrying", type(exc).__name__)
            await self.wait_for_stopped(self.wakeup.wait(), timeout=pause)

    async def _hold(self, lease: timedelta) -> bool:
        """Whether this worker holds the relay lease. It is taken, or renewed, only
        when a third of it has passed: at hundreds of rounds a second, writing it
        every round was a third of the relay's database work."""
        renew_after = lease.total_seconds() / 3
        if self.held_at is not None and time.monotonic() - self.held_at < renew_after:
            return True
        self.held_at = None
        started = time.monotonic()
        if await self.database.run(outbox.acquire_lease, LEASE, self.worker_id, self.clock(), lease):
            self.held_at = started
        return self.held_at is not None

    async def _publish(self, batch: list[outbox.PendingMessage]) -> bool:
        """Publish in order; mark the published prefix, park what can never be
        published. True when the whole batch is done."""
        futures: list[Any] = []
        for message in batch:
            key = message.key.encode("utf-8") if message.key is not None else None
            try:
                futures.append(
                    await self.producer.send(message.topic, key, message.value.encode("utf-8"), None, None, None)
                )
            except Exception as exc:  # refused before it was sent
                futures.append(_failed(exc))
        results = await asyncio.gather(*futures, return_exceptions=True)
        done: list[int] = []
        parked: list[tuple[int, str]] = []
        complete = True
        for message, result in zip(batch, results, strict=True):
            if isinstance(result, UNPUBLISHABLE):
                parked.append((message.id, f"{type(result).__name__}: {result}"))
                continue
            if isinstance(result, BaseException):
                self.broker_warning("outbox relay: cannot publish (%s: %s); retrying", type(result).__name__, result)
                complete = False
                break  # keep the order: what follows waits for this one
            done.append(message.id)
        if done:
            await self.database.run(outbox.mark_published, done, self.clock())
            self.published += len(done)
            published = set(done)
            for message in batch:
                if message.id in published and message.topic == self.alerts:
                    self.metrics.reported(message.value)
        for message_id, reason in parked:
            log.error("outbox message %d can never be published and was set aside: %s", message_id, reason)
            await self.database.run(outbox.park, message_id, reason, self.clock(), self.alerts)
        return complete

    async def _purge(self) -> None:
        if time.monotonic() - self.purged_at < PURGE_EVERY:
            return
        self.purged_at = time.monotonic()
        deleted = await self.database.run(outbox.purge_published, self.clock() - self.settings.outbox_retention)
        if deleted:
            log.info("outbox: %d published message(s) older than %s deleted", deleted, self.settings.outbox_retention)

    async def on_shutdown(self) -> None:
        close = getattr(self.producer, "close", None)  # its own producer (streams.kafka.own_producer)
        if close is not None:
            await close()

    async def on_stop(self) -> None:
        self.held_at = None
        try:
            await asyncio.wait_for(self.database.run(outbox.release_lease, LEASE, self.worker_id), timeout=3)
        except Exception:  # the lease simply expires
            log.debug("could not release the relay lease", exc_info=True)


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future
