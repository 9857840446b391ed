"""The delivery loop: claim due emails from the database, send them, record the result.

Runs on every worker; claims make sure each email is taken by one of them. The
schedule (next attempt, claim expiry) lives in the database, so retries survive
restarts and a retrying email never holds up anyone else's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from mode import Service
from sqlalchemy.exc import SQLAlchemyError

from streams.email_message import build_message
from streams.mailer import Mailer, SendError, classify
from streams.persistence import emails
from streams.persistence.db import Database
from streams.settings import Settings

log = logging.getLogger(__name__)


class Wakeups:
    """In-process nudges so that new work is picked up without waiting for a poll."""

    def __init__(self) -> None:
        self.delivery = asyncio.Event()
        self.relay = asyncio.Event()

    def work_added(self) -> None:
        self.delivery.set()
        self.relay.set()


class DeliveryService(Service):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        database: Database,
        mailer: Mailer,
        channels: emails.Channels,
        wakeups: Wakeups,
        worker_id: str,
        clock: Callable[[], datetime],
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.database = database
        self.mailer = mailer
        self.channels = channels
        self.wakeups = wakeups
        self.worker_id = worker_id
        self.clock = clock
        self.policy = emails.RetryPolicy(
            settings.max_send_attempts, settings.retry_backoff_base, settings.retry_backoff_max
        )
        self.sent = 0

    @Service.task
    async def _deliver(self) -> None:
        settings = self.settings
        pause = settings.poll_interval.total_seconds()
        while not self.should_stop:
            self.wakeups.delivery.clear()
            try:
                claimed = await self.database.run(
                    emails.claim_due,
                    self.worker_id,
                    self.clock(),
                    settings.delivery_batch_size,
                    settings.delivery_lease,
                    settings.contact_interval,
                )
                for email in claimed:
                    if self.should_stop:
                        break
                    await self._send(email)
            except SQLAlchemyError as exc:
                log.warning("delivery: database unavailable (%s); retrying", type(exc).__name__)
                await self.sleep(pause)
                continue
            if not claimed:
                await self.wait_for_stopped(self.wakeups.delivery.wait(), timeout=pause)

    async def _send(self, email: emails.ClaimedEmail) -> None:
        sent_at = self.clock()
        try:
            await self.mailer.send(build_message(email.outgoing, sent_at))
        except Exception as exc:
            error = classify(exc)
            retry = await self._record(emails.record_failure, email.id, error, self.clock(), self.policy, self.channels)
            log.warning(
                "email %s to therapist %s: attempt failed (%s); %s",
                email.id,
                email.therapist_id,
                error,
                "will retry" if retry else "failed for good",
            )
        else:
            await self._record(emails.record_sent, email.id, sent_at, self.channels)
            self.sent += 1
            log.info("email %s (%s) sent to therapist %s", email.id, email.kind, email.therapist_id)
        self.wakeups.relay.set()

    async def _record(self, work: Callable[..., object], *args: object) -> object:
        """Record a result; the email went out (or failed), so keep trying until the
        database takes it, rather than letting the claim expire into a re-send."""
        while True:
            try:
                return await self.database.run(work, *args)
            except SQLAlchemyError as exc:
                log.warning("delivery: cannot record a result (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self.settings.poll_interval.total_seconds())

    async def on_stop(self) -> None:
        await self.mailer.close()


__all__ = ["DeliveryService", "SendError", "Wakeups"]
