"""The command agent: ``communication-commands`` in (CONTRACT §3).

Thin: validate (malformed -> DLQ), then either hand the command to the therapist
agent (``create_email`` needs the therapist's directory entry and weekly window)
or carry it out on the stored emails in one transaction (streams.persistence.commands),
retrying while the database is unavailable so that no command is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import faust

from streams.app import Topics
from streams.broker_retry import until_published
from streams.codec import dumps
from streams.delivery import ThrottledWarning, Wakeups
from streams.dlq import publish_dead_letter
from streams.log_safety import log_failure
from streams.persistence import calls, commands
from streams.persistence.db import Database, run_retrying
from streams.persistence.emails import Channels
from streams.schemas import COMMANDS, InputEvent, Rejection, parse_input

log = logging.getLogger(__name__)

# Commands that need the therapist agent's state.
VIA_THERAPIST = frozenset({"communication.create_email"})


class CommandAgent:
    def __init__(
        self,
        topics: Topics,
        database: Database,
        channels: Channels,
        wakeups: Wakeups,
        clock: Callable[[], datetime],
        policy: calls.CallPolicy,
    ) -> None:
        # The call commands need the booking rules (slot, notice, horizon, capacity, attempts).
        self.handlers: dict[str, commands.Handler] = {
            **commands.HANDLERS,
            **{name: partial(handler, policy=policy) for name, handler in calls.CALL_HANDLERS.items()},
        }
        self.topics = topics
        self.database = database
        self.channels = channels
        self.wakeups = wakeups
        self.clock = clock
        self.database_warning = ThrottledWarning(log)

    async def __call__(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                parsed = parse_input(message.value, COMMANDS)
                if isinstance(parsed, Rejection):
                    log.warning(
                        "dead-lettered command %s[%d]@%d: %s",
                        message.topic,
                        message.partition,
                        message.offset,
                        parsed.reason,
                    )
                    await publish_dead_letter(
                        self.topics.dlq,
                        message,
                        parsed.reason,
                        self.clock(),
                        event_id=parsed.event_id,
                        event_type=parsed.event_type,
                    )
                    continue
                await self.carry_out(parsed, message.key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, "command agent: cannot carry out a command", exc)
                await publish_dead_letter(
                    self.topics.dlq, message, f"internal error: {type(exc).__name__}", self.clock()
                )

    async def carry_out(self, command: InputEvent, key: bytes | None) -> None:
        payload: dict[str, Any] = command.payload.model_dump(mode="json", exclude_none=True)
        if command.event_type in VIA_THERAPIST:
            therapist_id = payload["therapist_id"]
            forwarded = {
                "kind": "create_email",
                "event_id": command.event_id,
                "therapist_id": therapist_id,
                "command": payload,
            }
            await until_published(
                lambda: self.topics.inbox.send(key=str(therapist_id).encode(), value=dumps(forwarded)),
                self.database_warning,
            )
            return
        stored = commands.Command(command.event_id, command.event_type, payload, _therapist_of(key))
        # A database outage is waited out; an error retrying cannot cure goes to the DLQ.
        outcome = await run_retrying(
            self.database,
            commands.execute,
            stored,
            self.channels,
            self.clock(),
            self.handlers,
            warn=lambda message, *args: self.database_warning("command agent: " + message, *args),
        )
        log.info("command %s (%s): %s", command.event_id, command.event_type, outcome)
        self.wakeups.work_added()


def _therapist_of(key: bytes | None) -> int | None:
    """The topic is keyed by therapist id (CONTRACT §2); used for rejections."""
    try:
        return int(key) if key else None
    except ValueError:
        return None
