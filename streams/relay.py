"""Relays the outbox to Kafka, in order, whenever the broker takes it.

One worker at a time holds the relay lease, so messages leave in the order they
were written. A message is marked published only after the broker acknowledged
it; if the worker dies in between, the next holder publishes it again (with the
same event_id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from mode import Service
from sqlalchemy.exc import SQLAlchemyError

from streams.persistence import outbox
from streams.persistence.db import Database
from streams.settings import Settings

log = logging.getLogger(__name__)

LEASE = "outbox-relay"
BATCH = 500


class OutboxRelay(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        database: Database,
        producer: object,
        wakeup: asyncio.Event,
        worker_id: str,
        clock: Callable[[], datetime],
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.database = database
        self.producer = producer
        self.wakeup = wakeup
        self.worker_id = worker_id
        self.clock = clock
        self.published = 0

    @Service.task
    async def _relay(self) -> None:
        pause = self.settings.poll_interval.total_seconds()
        lease = max(timedelta(seconds=30), self.settings.poll_interval * 10)
        while not self.should_stop:
            self.wakeup.clear()
            try:
                holder = await self.database.run(outbox.acquire_lease, LEASE, self.worker_id, self.clock(), lease)
                batch = await self.database.run(outbox.unpublished, BATCH) if holder else []
                if batch:
                    await self._publish(batch)
                    await self.database.run(outbox.mark_published, [m.id for m in batch], self.clock())
                    self.published += len(batch)
                    continue
            except SQLAlchemyError as exc:
                log.warning("outbox relay: database unavailable (%s); retrying", type(exc).__name__)
            except Exception as exc:  # the broker refused or timed out: keep the rows, retry
                log.warning("outbox relay: cannot publish (%s: %s); retrying", type(exc).__name__, exc)
                await self.sleep(pause)
                continue
            await self.wait_for_stopped(self.wakeup.wait(), timeout=pause)

    async def _publish(self, batch: list[outbox.PendingMessage]) -> None:
        pending = []
        for message in batch:
            key = message.key.encode("utf-8") if message.key is not None else None
            pending.append(
                await self.producer.send(  # type: ignore[attr-defined]
                    message.topic, key, message.value.encode("utf-8"), None, None, None
                )
            )
        await asyncio.gather(*pending)

    async def on_stop(self) -> None:
        try:
            await asyncio.wait_for(self.database.run(outbox.release_lease, LEASE, self.worker_id), timeout=3)
        except Exception:  # the lease simply expires
            log.debug("could not release the relay lease", exc_info=True)
