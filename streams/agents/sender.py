"""The sender agent: turns send commands into stored, queued emails (and keeps the
database copy of the therapist directory).

Storing is idempotent (the email key is unique), so a replayed command is a
no-op. Commands are stored in batches, one transaction each, and acknowledged
only after their batch is stored: a worker stopped during a database outage
leaves them to be delivered again, never acknowledged unstored. While the
database is unavailable the agent waits and retries; a command that fails for
any other reason goes to the DLQ (and the therapist agent is told that the email
it decided will not come, so the therapist's weekly window is not held forever).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust
from sqlalchemy.orm import Session

from streams.delivery.wakeups import Wakeups
from streams.email import context
from streams.email.rendering import Renderer
from streams.kafka.dead_letters import publish_dead_letter
from streams.kafka.topics import Topics
from streams.messages.codec import dumps, loads
from streams.ops.logs import ThrottledWarning, log_failure
from streams.persistence import call_booking, directory, email_creation, outbox, settled_requests, waiting_requests
from streams.persistence.db import Database, run_retrying
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
        channels: outbox.Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        policy: call_booking.CallPolicy,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.topics = topics
        self.database = database
        self.renderer = renderer
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.identity = context.Identity(settings.sender_email, settings.sender_name)
        self.database_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        # noack_take: the events are acknowledged here, after their batch is stored.
        async for events in stream.noack_take(BATCH, within=BATCH_WITHIN):
            try:
                await self._store(events)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Something in the batch can never be stored: one by one, so only
                # that one goes to the DLQ.
                for event in events:
                    await self._one(event)
            for event in events:
                await stream.ack(event)
            self.wakeups.work_added()

    async def _one(self, event: Any) -> None:
        try:
            await self._store([event])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, "sender agent: cannot carry out a command", exc)
            await publish_dead_letter(
                self.topics.dlq, event.message, f"internal error: {type(exc).__name__}", self.clock()
            )
            await self._abandon(event)

    async def _abandon(self, event: Any) -> None:
        """A decided email that will not be created must not hold the window."""
        try:
            command = loads(event.value)
        except ValueError:
            return
        if command.get("kind") == "send_email" and command.get("email_key") and command.get("therapist"):
            therapist_id = command["therapist"].get("therapist_id")
            failed = {"kind": "email_failed", "email_key": command["email_key"], "therapist_id": therapist_id}
            await self.topics.inbox.send(key=str(therapist_id).encode(), value=dumps(failed))

    async def _store(self, events: list[Any]) -> None:
        commands = [loads(event.value) for event in events]
        await run_retrying(
            self.database,
            self._carry_out,
            commands,
            self.clock(),
            warn=lambda message, *args: self.database_warning("sender agent: " + message, *args),
        )

    def _carry_out(self, session: Session, commands: list[dict[str, Any]], now: datetime) -> None:
        """All commands of a batch, in their order, in one transaction."""
        run: list[dict[str, Any]] = []
        details: list[dict[str, Any]] = []

        def store_run() -> None:
            if details:  # before anything that may need them
                waiting_requests.keep(session, details, now)
                details.clear()
            if run:
                ids = email_creation.store_send_commands(
                    session, run, self.renderer.render, self.identity, self.channels, now
                )
                stored = sum(1 for email_id in ids if email_id is not None)
                if stored:
                    log.info("%d email(s) stored", stored)
                run.clear()

        for command in commands:
            kind = command["kind"]
            if kind == "send_email":
                if details:
                    store_run()
                run.append(command)
                continue
            if kind == "request_details":
                if run:
                    store_run()
                details.append(command)
                continue
            store_run()
            if kind == "settle_request":
                settled_requests.settle_request(session, command, self.channels, now)
            elif kind == "therapist_profile":
                directory.update_directory(session, command, self.channels, now)
            elif kind == "forget_request_details":
                waiting_requests.forget(session, [int(r) for r in command["placement_request_ids"]])
            elif kind == "book_call":
                call_booking.book_instead_of_email(session, command, self.policy, self.channels, now)
            else:
                raise ValueError(f"unknown send command {kind!r}")
        store_run()
