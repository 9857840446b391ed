"""The sender agent: turns send commands into stored, queued emails.

Storing is idempotent (the email key is unique), so a replayed command is a
no-op. While the database is unreachable the agent waits and retries rather than
skipping the command; the delivery loop then sends what was stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from streams.app import Topics
from streams.codec import loads
from streams.delivery import Wakeups
from streams.dlq import publish_dead_letter
from streams.log_safety import log_failure
from streams.persistence import calls, emails
from streams.persistence.db import Database
from streams.rendering import Renderer
from streams.settings import Settings

log = logging.getLogger(__name__)

# Send commands stored per transaction, and how long to wait to fill a batch.
BATCH = 100
BATCH_WITHIN = 0.05


class SenderAgent:
    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        database: Database,
        renderer: Renderer,
        channels: emails.Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.database = database
        self.renderer = renderer
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.identity = emails.Identity(settings.sender_email, settings.sender_name)

    async def __call__(self, stream: faust.StreamT) -> None:
        # Batches: one transaction stores up to BATCH emails. take_events acks them
        # only after the body ran; a replay after a crash is recognised by email key.
        async for events in stream.take_events(BATCH, within=BATCH_WITHIN):
            try:
                await self._until_stored(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Something in the batch is malformed: one by one, so only that one
                # goes to the DLQ.
                for event in events:
                    await self._one(event)
            self.wakeups.work_added()

    async def _one(self, event: Any) -> None:
        try:
            await self._until_stored([event])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, "sender agent: cannot carry out a command", exc)
            await publish_dead_letter(
                self.topics.dlq, event.message, f"internal error: {type(exc).__name__}", self.clock()
            )

    async def _until_stored(self, events: list[Any]) -> None:
        commands = [loads(event.value) for event in events]
        delay = 0.5
        while True:
            try:
                await self.database.run(self._carry_out, commands, self.clock())
                return
            except SQLAlchemyError as exc:
                log.warning("sender agent: database unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _carry_out(self, session: Session, commands: list[dict[str, Any]], now: datetime) -> None:
        """All commands of a batch, in their order, in one transaction."""
        run: list[dict[str, Any]] = []

        def store_run() -> None:
            if run:
                ids = emails.store_send_commands(session, run, self.renderer.render, self.identity, self.channels, now)
                stored = sum(1 for email_id in ids if email_id is not None)
                if stored:
                    log.info("%d email(s) stored", stored)
                run.clear()

        for command in commands:
            kind = command["kind"]
            if kind == "send_email":
                run.append(command)
                continue
            store_run()
            if kind == "settle_request":
                emails.settle_request(session, command, now)
            elif kind == "therapist_profile":
                calls.update_directory(session, command, self.channels, now)
            else:
                raise ValueError(f"unknown send command {kind!r}")
        store_run()
