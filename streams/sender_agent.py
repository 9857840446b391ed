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

from streams.app import Topics
from streams.codec import loads
from streams.delivery import Wakeups
from streams.dlq import publish_dead_letter
from streams.log_safety import log_failure
from streams.persistence import emails
from streams.persistence.db import Database
from streams.rendering import Renderer
from streams.settings import Settings

log = logging.getLogger(__name__)


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
        async for event in stream.events():
            try:
                command = loads(event.value)
                await self._until_stored(command)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "sender agent: cannot carry out a command", exc)
                await publish_dead_letter(
                    self.topics.dlq, event.message, f"internal error: {type(exc).__name__}", self.clock()
                )
            self.wakeups.work_added()

    async def _until_stored(self, command: dict[str, Any]) -> None:
        delay = 0.5
        while True:
            try:
                await self._store(command)
                return
            except SQLAlchemyError as exc:
                log.warning("sender agent: database unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _store(self, command: dict[str, Any]) -> None:
        kind = command["kind"]
        if kind == "send_email":
            email_id = await self.database.run(
                emails.store_send_command,
                command,
                self.renderer.render,
                self.identity,
                self.channels,
                self.clock(),
            )
            if email_id is not None:
                log.info(
                    "email %s (%s, %d request(s)) stored for therapist %s",
                    email_id,
                    command["email_kind"],
                    len(command["requests"]),
                    command["therapist"]["therapist_id"],
                )
        elif kind == "settle_request":
            await self.database.run(emails.settle_request, command, self.clock())
        else:
            raise ValueError(f"unknown send command {kind!r}")
